"""Bad data files end in one error line naming the file (and line or record), never in a
traceback or a silently wrong value."""

import json
import os
import shutil

import pytest

from jaxvlm import cli
from jaxvlm.config import load_config
from jaxvlm.data import gsm8k, images
from jaxvlm.data.textvqa import read_textvqa, read_vqa_jsonl
from jaxvlm.data.vqa import read_vqa
from jaxvlm.errors import DataFileError
from jaxvlm.run import experiment_module

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
VQA = os.path.join(FIXTURES, "vqa")
TEXTVQA = os.path.join(FIXTURES, "textvqa")
Q_NAME = "v2_OpenEnded_mscoco_val2014_questions.json"
A_NAME = "v2_mscoco_val2014_annotations.json"


def one_line(fn) -> str:
  """The CLI's rendering of the error ``fn`` raises (one line, as ``jaxvlm`` prints it)."""
  with pytest.raises(DataFileError) as e:
    fn()
  line = cli.error_line(e.value)
  assert "\n" not in line and line.startswith("jaxvlm: error: ")
  return line


def gsm8k_copy(tmp_path, name="test.jsonl"):
  path = tmp_path / name
  shutil.copy(os.path.join(FIXTURES, "gsm8k", name), path)
  return path


def test_gsm8k_malformed_line_names_file_and_line(tmp_path):
  path = gsm8k_copy(tmp_path)
  lines = path.read_text().splitlines()
  lines[1] = lines[1][:40]
  path.write_text("\n".join(lines) + "\n")
  line = one_line(lambda: gsm8k.read_jsonl(str(path)))
  assert f"{path}: line 2: malformed JSON" in line
  line = one_line(lambda: gsm8k.read_aug(str(path)))
  assert f"{path}: line 2: malformed JSON" in line


def test_gsm8k_missing_field_or_wrong_type_names_file_and_line(tmp_path):
  path = tmp_path / "g.jsonl"
  path.write_text(json.dumps({"question": "q", "answer": "a #### 1"}) + "\n"
                  + json.dumps({"question": "q"}) + "\n")
  assert f"{path}: line 2 lacks 'answer'" in one_line(lambda: gsm8k.read_jsonl(str(path)))
  path.write_text(json.dumps({"question": ["q"], "answer": "a #### 1"}) + "\n")
  assert "line 1: field 'question' is ['q'], expected a string" in one_line(
      lambda: gsm8k.read_aug(str(path)))


def test_svamp_array_errors_name_file_and_item(tmp_path):
  path = gsm8k_copy(tmp_path, "SVAMP.json")
  data = json.loads(path.read_text())
  del data[1]["Answer"]
  path.write_text(json.dumps(data))
  assert f"{path}: item 1 lacks 'Answer'" in one_line(lambda: gsm8k.read_svamp(str(path)))
  path.write_text(json.dumps(data)[:-30])
  assert f"{path}: malformed JSON at line 1" in one_line(lambda: gsm8k.read_svamp(str(path)))


def vqa_copy(tmp_path):
  root = tmp_path / "vqa"
  shutil.copytree(VQA, root)
  return root / Q_NAME, root / A_NAME, root / "images"


def test_vqa_question_without_image_id_blames_the_questions_file(tmp_path):
  q, a, image_dir = vqa_copy(tmp_path)
  data = json.loads(q.read_text())
  qid = data["questions"][1]["question_id"]
  del data["questions"][1]["image_id"]
  q.write_text(json.dumps(data))
  line = one_line(lambda: read_vqa(str(q), str(a), str(image_dir)))
  assert f"{q}: question {qid} lacks 'image_id'" in line and A_NAME not in line
  data["questions"][1]["image_id"] = 9
  del data["questions"][1]["question"]
  q.write_text(json.dumps(data))
  line = one_line(lambda: read_vqa(str(q), str(a), str(image_dir)))
  assert f"{q}: question {qid} lacks 'question'" in line and A_NAME not in line


def test_vqa_annotation_answers_as_a_string_are_refused(tmp_path):
  q, a, image_dir = vqa_copy(tmp_path)
  data = json.loads(a.read_text())
  qid = data["annotations"][0]["question_id"]
  data["annotations"][0]["answers"] = "yes"
  a.write_text(json.dumps(data))
  line = one_line(lambda: read_vqa(str(q), str(a), str(image_dir)))
  assert f"{a}: annotation of question {qid}: field 'answers' is 'yes'" in line


def textvqa_copy(tmp_path):
  root = tmp_path / "textvqa"
  shutil.copytree(TEXTVQA, root)
  return root / "TextVQA_0.5.1_val.json", root / "train_images"


def test_textvqa_string_answers_are_refused_not_split(tmp_path):
  path, image_dir = textvqa_copy(tmp_path)
  data = json.loads(path.read_text())
  qid = data["data"][0]["question_id"]
  data["data"][0]["answers"] = "yes"
  path.write_text(json.dumps(data))
  line = one_line(lambda: read_textvqa(str(path), str(image_dir)))
  assert f"{path}: question {qid}: field 'answers' is 'yes', expected a list of strings" in line
  data["data"][0]["answers"] = ["yes", ["no"]]
  path.write_text(json.dumps(data))
  assert "item 1 of 'answers'" in one_line(lambda: read_textvqa(str(path), str(image_dir)))


def test_textvqa_missing_field_names_file_and_entry(tmp_path):
  path, image_dir = textvqa_copy(tmp_path)
  data = json.loads(path.read_text())
  del data["data"][1]["image_id"]
  path.write_text(json.dumps(data))
  assert f"{path}: entry 1 lacks 'image_id'" in one_line(
      lambda: read_textvqa(str(path), str(image_dir)))


def test_vqa_jsonl_cache_errors_name_file_and_line(tmp_path):
  path = tmp_path / "val.jsonl"
  good = {"question_id": 1, "image": "a.jpg", "question": "q?", "answers": ["yes"] * 10}
  path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "answers": "yes"}) + "\n")
  assert f"{path}: line 2: field 'answers' is 'yes'" in one_line(
      lambda: read_vqa_jsonl(str(path)))
  path.write_text(json.dumps(good) + "\n" + json.dumps(good)[:25] + "\n")
  assert f"{path}: line 2: malformed JSON" in one_line(lambda: read_vqa_jsonl(str(path)))


@pytest.mark.parametrize("content", [b"not an image at all", "truncated"])
def test_corrupt_image_names_its_path(tmp_path, content):
  src = os.path.join(TEXTVQA, "train_images", "003a8ae2ef43b901.jpg")
  path = tmp_path / "broken.jpg"
  data = open(src, "rb").read()
  path.write_bytes(data[: len(data) // 2] if content == "truncated" else content)
  line = one_line(lambda: images.load_image(str(path)))
  assert f"{path}: not a readable image" in line


def test_sft_empty_gsm8k_test_set_is_an_error_not_nan(tmp_path):
  train = gsm8k_copy(tmp_path)
  empty = tmp_path / "empty.jsonl"
  empty.write_text("\n")
  cfg = load_config("configs/sft.py:tiny", ["--config.data.source=gsm8k",
                                            f"--config.data.train_path={train}",
                                            f"--config.data.test_path={empty}"])
  line = one_line(lambda: experiment_module("sft").load_data(cfg.data))
  assert f"{empty}: holds no records; the test set would be empty" in line
