"""GSM8K-format jsonl: one ``{"question": ..., "answer": "... #### N"}`` object per line."""

from __future__ import annotations

import json
import os

from jaxvlm.errors import ConfigError, MissingFileError


def read_jsonl(path: str, limit: int | None = None) -> list[dict]:
  """The ``question``/``answer`` records of a GSM8K jsonl file (first ``limit`` if given)."""
  if not os.path.exists(path):
    raise MissingFileError(path, "GSM8K jsonl")
  out = []
  with open(path) as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      record = json.loads(line)
      if not {"question", "answer"} <= set(record):
        raise ConfigError(f"{path}:{n}", sorted(record), "an object with question and answer")
      out.append({"question": record["question"], "answer": record["answer"]})
      if limit is not None and len(out) >= limit:
        break
  return out
