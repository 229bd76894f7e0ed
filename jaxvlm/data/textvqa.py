"""TextVQA (official ``TextVQA_0.5.1_val.json`` + image folder) and the cached jsonl form of any
VQA split, both as :class:`~jaxvlm.data.vqa.VQARecord` lists.

* :func:`read_textvqa` — ``{"dataset_name": "textvqa", "data": [{"question_id", "question",
  "image_id", "answers": [10], ...}]}``; images ``image_dir/<image_id>.jpg`` (the official
  ``train_images`` folder holds the val images too).
* :func:`write_vqa_jsonl` / :func:`read_vqa_jsonl` — one object per line: ``question_id``,
  ``image`` (path, relative to the jsonl's folder or absolute), ``question``, ``answers``
  (SGL caches VQAv2 / TextVQA val this way; a run reads the cache instead of the json files).
"""

from __future__ import annotations

import json
import os
from typing import Sequence

from jaxvlm.data import records
from jaxvlm.data.vqa import VQARecord, majority, read_json
from jaxvlm.errors import MissingFileError


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
