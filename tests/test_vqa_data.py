"""VQAv2 / OK-VQA reader on real-format fixtures, its errors, and the synthetic writer round trip."""

import json
import os
import shutil

import numpy as np
import pytest

from jaxvlm.data import synthetic_vqa as sv
from jaxvlm.data.vqa import load_image, read_vqa
from jaxvlm.errors import DataFileError, MissingFileError

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "vqa")
Q = os.path.join(FIXTURES, "v2_OpenEnded_mscoco_val2014_questions.json")
A = os.path.join(FIXTURES, "v2_mscoco_val2014_annotations.json")
IMAGES = os.path.join(FIXTURES, "images")


def test_reads_vqav2_fixture():
  records = read_vqa(Q, A, IMAGES)
  assert [r.question_id for r in records] == [9000, 9001, 42000, 393225000]
  r = records[1]
  assert (r.image_id, r.question, r.answer, r.answer_type, r.question_type) == (
      9, "How many forks are there?", "2", "number", "how many")
  assert r.answers == ("2",) * 8 + ("two", "3")
  assert os.path.basename(r.image_path) == "COCO_val2014_000000000009.png"  # not the train2014 one
  assert os.path.basename(records[2].image_path) == "COCO_val2014_000000000042.jpg"
  image = load_image(records[0])
  assert image.shape == (12, 16, 3) and image.dtype == np.uint8
  assert (image[0, 0] != image[5, 8]).any()
  assert [r.question_id for r in read_vqa(Q, A, IMAGES, limit=2)] == [9000, 9001]


def _copy(tmp_path):
  root = tmp_path / "vqa"
  shutil.copytree(FIXTURES, root)
  return (str(root / os.path.basename(Q)), str(root / os.path.basename(A)), str(root / "images"))


def test_mismatched_question_ids_name_file_and_ids(tmp_path):
  q, a, images = _copy(tmp_path)
  data = json.load(open(a))
  data["annotations"][1]["question_id"] = 777
  json.dump(data, open(a, "w"))
  with pytest.raises(DataFileError, match=r"annotations\.json.*\[777\].*\[9001\]"):
    read_vqa(q, a, images)


def test_missing_image_names_path(tmp_path):
  q, a, images = _copy(tmp_path)
  os.remove(os.path.join(images, "COCO_val2014_000000000042.jpg"))
  with pytest.raises(MissingFileError, match="COCO_val2014_000000000042"):
    read_vqa(q, a, images)


def test_malformed_or_missing_json_names_file(tmp_path):
  q, a, images = _copy(tmp_path)
  with open(q, "w") as f:
    f.write('{"questions": [')
  with pytest.raises(DataFileError, match="questions.json: malformed JSON"):
    read_vqa(q, a, images)
  json.dump({"annotation": []}, open(q, "w"))
  with pytest.raises(DataFileError, match="questions.json.*'questions'"):
    read_vqa(q, a, images)
  with pytest.raises(MissingFileError, match="nope.json"):
    read_vqa(Q, os.path.join(str(tmp_path), "nope.json"), images)


def test_synthetic_folder_round_trip(tmp_path):
  samples = sv.make_vqa_split(12, seed=5)
  sv.write_vqa_folder(samples, str(tmp_path), split="val2014")
  records = read_vqa(str(tmp_path / "questions.json"), str(tmp_path / "annotations.json"),
                     str(tmp_path / "images"))
  assert len(records) == len(samples)
  for s, r in zip(samples, records):
    assert (r.question_id, r.image_id, r.question, r.answers, r.answer, r.question_type,
            r.answer_type) == (s.question_id, s.image_id, s.question, s.answers, s.answer,
                               s.question_type, s.answer_type)
    np.testing.assert_array_equal(load_image(r), s.image)
