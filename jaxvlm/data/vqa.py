"""VQAv2 / OK-VQA readers: question + annotation json files and a COCO image folder.

``read_vqa(questions_json, annotations_json, image_dir)`` pairs each question with its
annotation (ten answers, ``multiple_choice_answer``, types) and its image file
``image_dir/COCO_<data_subtype>_<image_id:012d>.(jpg|png)``; ``load_image(record)`` gives the
image as uint8 RGB. Errors: a missing or malformed json file, annotations whose question ids
do not match the questions file, a field missing or of the wrong type (blaming the file that
holds it), a missing image file — each names the file (and ids).
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

from jaxvlm.data import images, records
from jaxvlm.errors import DataFileError, MissingFileError

_COCO_NAME = re.compile(r"^COCO_(?P<split>[A-Za-z0-9]+)_(?P<id>\d+)\.(?:jpg|jpeg|png)$")


@dataclasses.dataclass(frozen=True)
class VQARecord:
  question_id: int
  image_id: int
  image_path: str
  question: str
  answers: tuple[str, ...]
  answer: str  # multiple_choice_answer
  question_type: str
  answer_type: str


def majority(answers) -> str:
  """The most frequent answer (the first in sorted order on ties; "" when there is none)."""
  return max(sorted(set(answers)), key=list(answers).count) if answers else ""


def coco_file_name(split: str, image_id: int, ext: str = "jpg") -> str:
  """``COCO_<split>_<image_id:012d>.<ext>``."""
  return f"COCO_{split}_{int(image_id):012d}.{ext}"


def read_json(path: str, key: str, what: str) -> dict:
  """The parsed json object at ``path``, which must hold list ``key``."""
  data = records.read_json(path, what)
  if not isinstance(data, dict) or not isinstance(data.get(key), list):
    raise DataFileError(path, f"expected a JSON object with a list {key!r}")
  return data


def _by_question_id(entries: list, path: str, what: str) -> dict[int, dict]:
  """question id -> entry (``what`` names an entry, e.g. "question 3")."""
  out = {}
  for i, e in enumerate(entries):
    records.require(e, ("question_id",), path, f"{what} {i}")
    out[records.integer(e, "question_id", path, f"{what} {i}")] = e
  return out


def _image_files(image_dir: str, split: str | None) -> dict[int, str]:
  """image id -> file name of the COCO-named images in ``image_dir`` (of ``split`` if given)."""
  if not os.path.isdir(image_dir):
    raise MissingFileError(image_dir, "image folder")
  found = {}
  for name in sorted(os.listdir(image_dir)):
    m = _COCO_NAME.match(name)
    if m and (split is None or m["split"] == split):
      found.setdefault(int(m["id"]), name)
  return found


def read_vqa(questions_json: str, annotations_json: str, image_dir: str,
             limit: int | None = None) -> list[VQARecord]:
  """The first ``limit`` (all when None) questions, each with its annotation and image path."""
  qdata = read_json(questions_json, "questions", "VQA questions")
  adata = read_json(annotations_json, "annotations", "VQA annotations")
  questions = _by_question_id(qdata["questions"], questions_json, "question")
  annotations = _by_question_id(adata["annotations"], annotations_json, "annotation")
  extra, missing = sorted(annotations.keys() - questions.keys()), sorted(
      questions.keys() - annotations.keys())
  if extra or missing:
    raise DataFileError(annotations_json, f"question ids do not match {questions_json}: "
                        f"{len(extra)} annotated id(s) not in the questions file {extra[:5]}, "
                        f"{len(missing)} question id(s) without annotation {missing[:5]}")
  split = qdata.get("data_subtype")
  files = _image_files(image_dir, split)
  out = []
  for qid, q in list(questions.items())[:limit]:
    q_where, a_where = f"question {qid}", f"annotation of question {qid}"
    records.require(q, ("image_id", "question"), questions_json, q_where)
    image_id = records.integer(q, "image_id", questions_json, q_where)
    if image_id not in files:
      raise MissingFileError(os.path.join(image_dir, coco_file_name(split or "<split>", image_id)),
                             f"image of question {qid}")
    a = annotations[qid]
    answers = records.annotation_answers(a, annotations_json, a_where)
    answer = (records.text(a, "multiple_choice_answer", annotations_json, a_where)
              if a.get("multiple_choice_answer") else majority(answers))
    out.append(VQARecord(
        question_id=qid, image_id=image_id, image_path=os.path.join(image_dir, files[image_id]),
        question=records.text(q, "question", questions_json, q_where), answers=tuple(answers),
        answer=answer, question_type=str(a.get("question_type", "")),
        answer_type=str(a.get("answer_type", ""))))
  return out


def load_image(record: VQARecord) -> np.ndarray:
  """The record's image as uint8 ``[H, W, 3]`` RGB."""
  return np.asarray(images.load_image(record.image_path), np.uint8)
