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

from jaxvlm.data.vqa import VQARecord, read_json
from jaxvlm.errors import DataFileError, MissingFileError


def _majority(answers: Sequence[str]) -> str:
  return max(sorted(set(answers)), key=list(answers).count) if answers else ""


def read_textvqa(json_path: str, image_dir: str, limit: int | None = None) -> list[VQARecord]:
  """The first ``limit`` (all when None) TextVQA questions with their ten answers and image."""
  data = read_json(json_path, "data", "TextVQA questions")
  records = []
  for entry in data["data"][:limit]:
    try:
      qid, image_id = int(entry["question_id"]), str(entry["image_id"])
      answers = tuple(str(a) for a in entry.get("answers", ()))
      question = str(entry["question"])
    except (KeyError, TypeError, ValueError) as e:
      raise DataFileError(json_path, f"an entry lacks question_id / image_id / question ({e!r})"
                          ) from None
    path = os.path.join(image_dir, f"{image_id}.jpg")
    if not os.path.exists(path):
      raise MissingFileError(path, f"image of question {qid}")
    records.append(VQARecord(question_id=qid, image_id=image_id, image_path=path,
                             question=question, answers=answers, answer=_majority(answers),
                             question_type="textvqa", answer_type="other"))
  return records


def write_vqa_jsonl(records: Sequence[VQARecord], path: str) -> None:
  """Writes the cached jsonl form (atomically)."""
  from jaxvlm.io import write_text
  write_text(path, "".join(json.dumps({"question_id": r.question_id, "image": r.image_path,
                                       "question": r.question, "answers": list(r.answers)}) + "\n"
                           for r in records))


def read_vqa_jsonl(path: str, limit: int | None = None) -> list[VQARecord]:
  """Records of a cached jsonl file (see the module docstring)."""
  if not os.path.exists(path):
    raise MissingFileError(path, "VQA jsonl cache")
  base, records = os.path.dirname(os.path.abspath(path)), []
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        e = json.loads(line)
        answers = tuple(str(a) for a in e["answers"])
        records.append(VQARecord(
            question_id=int(e["question_id"]), image_id=e.get("image_id", -1),
            image_path=os.path.join(base, e["image"]), question=str(e["question"]),
            answers=answers, answer=_majority(answers), question_type=e.get("question_type", ""),
            answer_type=e.get("answer_type", "")))
      except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise DataFileError(path, f"line {n}: {err!r}") from None
      if limit is not None and len(records) >= limit:
        break
  return records
