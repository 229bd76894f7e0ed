"""TextVQA (official ``TextVQA_0.5.1_val.json`` + image folder), the InternVL / SGL evaluation
layout and the cached jsonl form of any VQA split, all as :class:`~jaxvlm.data.vqa.VQARecord`
lists.

* :func:`read_textvqa` — ``{"dataset_name": "textvqa", "data": [{"question_id", "question",
  "image_id", "answers": [10], ...}]}``; images ``image_dir/<image_id>.jpg`` (the official
  ``train_images`` folder holds the val images too).
* :func:`write_vqa_jsonl` / :func:`read_vqa_jsonl` — one object per line: ``question_id``,
  ``image`` (path, relative to the jsonl's folder or absolute), ``question``, ``answers``
  (SGL caches VQAv2 / TextVQA val this way; a run reads the cache instead of the json files).
* :func:`read_internvl_vqa` — the files InternVL's and SGL's ``evaluate_vqa.py`` read
  (``data/textvqa/textvqa_val.jsonl`` + ``textvqa_val_annotations.json``, ``data/vqav2/
  vqav2_val.jsonl`` + ``v2_mscoco_val2014_annotations.json``): one jsonl object per question with
  ``question_id``, ``question``, ``image`` (a path relative to the data root, e.g.
  ``data/textvqa/train_images/<id>.jpg``) and a single ``answer``; the ten answers come from the
  VQA-format annotation json (``{"annotations": [{"question_id", "answers": [{"answer"}]}]}``).
"""

from __future__ import annotations

import json
import os
from typing import Sequence

from jaxvlm.data import records
from jaxvlm.data.vqa import VQARecord, majority, read_json
from jaxvlm.errors import DataFileError, MissingFileError


def read_textvqa(json_path: str, image_dir: str, limit: int | None = None) -> list[VQARecord]:
  """The first ``limit`` (all when None) TextVQA questions with their ten answers and image."""
  data = read_json(json_path, "data", "TextVQA questions")
  out = []
  for i, entry in enumerate(data["data"][:limit]):
    where = f"entry {i}"
    records.require(entry, ("question_id", "image_id", "question"), json_path, where)
    qid = records.integer(entry, "question_id", json_path, where)
    where = f"question {qid}"
    image_id = records.text(entry, "image_id", json_path, where)
    answers = records.text_list(entry, "answers", json_path, where) if "answers" in entry else ()
    path = os.path.join(image_dir, f"{image_id}.jpg")
    if not os.path.exists(path):
      raise MissingFileError(path, f"image of question {qid}")
    out.append(VQARecord(question_id=qid, image_id=image_id, image_path=path,
                         question=records.text(entry, "question", json_path, where),
                         answers=answers, answer=majority(answers), question_type="textvqa",
                         answer_type="other"))
  return out


def write_vqa_jsonl(vqa_records: Sequence[VQARecord], path: str) -> None:
  """Writes the cached jsonl form (atomically)."""
  from jaxvlm.io import write_text
  write_text(path, "".join(json.dumps({"question_id": r.question_id, "image": r.image_path,
                                       "question": r.question, "answers": list(r.answers)}) + "\n"
                           for r in vqa_records))


def read_vqa_jsonl(path: str, limit: int | None = None) -> list[VQARecord]:
  """Records of a cached jsonl file (see the module docstring)."""
  if not os.path.exists(path):
    raise MissingFileError(path, "VQA jsonl cache")
  base, out = os.path.dirname(os.path.abspath(path)), []
  for n, e in records.json_lines(path, "VQA jsonl cache"):
    where = f"line {n}"
    records.require(e, ("question_id", "image", "question", "answers"), path, where)
    answers = records.text_list(e, "answers", path, where)
    out.append(VQARecord(
        question_id=records.integer(e, "question_id", path, where), image_id=e.get("image_id", -1),
        image_path=os.path.join(base, records.text(e, "image", path, where)),
        question=records.text(e, "question", path, where), answers=answers,
        answer=majority(answers), question_type=str(e.get("question_type", "")),
        answer_type=str(e.get("answer_type", ""))))
    if limit is not None and len(out) >= limit:
      break
  return out


def _annotated_answers(annotations_json: str) -> dict[int, tuple[str, ...]]:
  """question id -> its ten answers, from a VQA-format annotation json."""
  data = read_json(annotations_json, "annotations", "VQA annotations")
  out = {}
  for i, a in enumerate(data["annotations"]):
    records.require(a, ("question_id", "answers"), annotations_json, f"annotation {i}")
    qid = records.integer(a, "question_id", annotations_json, f"annotation {i}")
    out[qid] = records.annotation_answers(a, annotations_json,
                                          f"annotation of question {qid}")
  return out


def read_internvl_vqa(jsonl_path: str, annotations_json: str, data_root: str,
                      limit: int | None = None, question_type: str = "") -> list[VQARecord]:
  """The first ``limit`` (all when None) questions of an InternVL / SGL evaluation jsonl, their
  ten answers from ``annotations_json`` and their images under ``data_root`` (module
  docstring). A row without ``answer`` names the jsonl line; a question the annotation file
  lacks names both files."""
  answers = _annotated_answers(annotations_json)
  out = []
  for n, e in records.json_lines(jsonl_path, "InternVL VQA jsonl"):
    where = f"line {n}"
    records.require(e, ("question_id", "question", "image", "answer"), jsonl_path, where)
    qid = records.integer(e, "question_id", jsonl_path, where)
    if qid not in answers:
      raise DataFileError(annotations_json, f"no annotation of question {qid} (line {n} of "
                                            f"{jsonl_path})")
    path = os.path.join(data_root, records.text(e, "image", jsonl_path, where))
    if not os.path.exists(path):
      raise MissingFileError(path, f"image of question {qid} ({jsonl_path} line {n}, under "
                                   f"data root {data_root})")
    out.append(VQARecord(
        question_id=qid, image_id=e.get("image_id", -1), image_path=path,
        question=records.text(e, "question", jsonl_path, where), answers=answers[qid],
        answer=records.text(e, "answer", jsonl_path, where),
        question_type=str(e.get("question_type", question_type)),
        answer_type=str(e.get("answer_type", ""))))
    if limit is not None and len(out) >= limit:
      break
  return out
