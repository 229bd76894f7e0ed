"""GSM8K-format jsonl: one ``{"question": ..., "answer": "... #### N"}`` object per line.

Also the KAVA readers (``READERS``): GSM8K-AUG / AUG-NL, the GSM8K test set, GSM8K-Hard, SVAMP
and MultiArith as published, each returning ``{"question", "cot", "answer"}`` records with the
answer number normalised (``cot`` empty for the evaluation-only sets).
"""

from __future__ import annotations

import json
import os

from jaxvlm.errors import ConfigError, MissingFileError
from jaxvlm.eval.gsm8k import normalize_number


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


# ----- KAVA readers: every reader returns {"question", "cot", "answer"} records ----------------
def split_solution(text: str, where: str = "answer") -> tuple[str, str]:
  """``"steps ... #### N"`` -> (``"steps ..."``, normalised ``"N"``); no ``####`` is an error."""
  if "####" not in text:
    raise ConfigError(where, text[:80], "a GSM8K solution ending in '#### <number>'")
  cot, final = text.rsplit("####", 1)
  return cot.strip(), normalize_number(final)


def _load_json_records(path: str, what: str) -> list[dict]:
  if not os.path.exists(path):
    raise MissingFileError(path, what)
  with open(path) as f:
    text = f.read()
  if text.lstrip().startswith("["):
    return json.loads(text)
  return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_aug(path: str, limit: int | None = None) -> list[dict]:
  """GSM8K-AUG / GSM8K-AUG-NL jsonl (``whynlp/gsm8k-aug``): either ``{"question", "cot",
  "answer"}`` (answer = the number) or ``{"question", "answer": "<<a*b=c>> ... #### N"}``."""
  out = []
  for n, r in enumerate(_load_json_records(path, "GSM8K-AUG jsonl"), 1):
    if "question" not in r or "answer" not in r:
      raise ConfigError(f"{path}:{n}", sorted(r), "an object with question and answer (+ cot)")
    if "cot" in r:  # cot: one string, or a list of step strings (some conversions)
      cot = r["cot"] if isinstance(r["cot"], str) else " ".join(map(str, r["cot"]))
      answer = str(r["answer"])
      final = (split_solution(answer, f"{path}:{n}.answer")[1] if "####" in answer
               else normalize_number(answer))
    else:
      cot, final = split_solution(r["answer"], f"{path}:{n}.answer")
    out.append({"question": r["question"].strip(), "cot": cot.strip(), "answer": final})
    if limit is not None and len(out) >= limit:
      break
  return out


def read_gsm8k_test(path: str, limit: int | None = None) -> list[dict]:
  """The GSM8K test jsonl (``openai/grade-school-math``): the solution text is the CoT."""
  return [{"question": r["question"].strip(), **dict(zip(("cot", "answer"), split_solution(
      r["answer"], f"{path}:{n}.answer")))} for n, r in enumerate(read_jsonl(path, limit), 1)]


def read_gsm_hard(path: str, limit: int | None = None) -> list[dict]:
  """GSM8K-Hard (``reasoning-machines/gsm-hard``) jsonl: ``{"input", "code", "target"}``."""
  rows = _load_json_records(path, "GSM8K-Hard jsonl")[:limit]
  for n, r in enumerate(rows, 1):
    if not {"input", "target"} <= set(r):
      raise ConfigError(f"{path}:{n}", sorted(r), "an object with input and target")
  return [{"question": r["input"].strip(), "cot": "", "answer": normalize_number(str(r["target"]))}
          for r in rows]


def read_svamp(path: str, limit: int | None = None) -> list[dict]:
  """SVAMP (``arkilpatel/SVAMP`` ``SVAMP.json``): ``{"Body", "Question", "Equation", "Answer"}``;
  the question is ``Body + " " + Question``."""
  rows = _load_json_records(path, "SVAMP json")[:limit]
  for n, r in enumerate(rows, 1):
    if not {"Body", "Question", "Answer"} <= set(r):
      raise ConfigError(f"{path}[{n - 1}]", sorted(r), "an object with Body, Question, Answer")
  return [{"question": f"{r['Body'].strip()} {r['Question'].strip()}", "cot": "",
           "answer": normalize_number(str(r["Answer"]))} for r in rows]


def read_multiarith(path: str, limit: int | None = None) -> list[dict]:
  """MultiArith (``MultiArith.json``): ``{"sQuestion", "lEquations", "lSolutions"}``."""
  rows = _load_json_records(path, "MultiArith json")[:limit]
  for n, r in enumerate(rows, 1):
    if not {"sQuestion", "lSolutions"} <= set(r) or not r["lSolutions"]:
      raise ConfigError(f"{path}[{n - 1}]", sorted(r), "an object with sQuestion, lSolutions")
  return [{"question": r["sQuestion"].strip(), "cot": "",
           "answer": normalize_number(str(r["lSolutions"][0]))} for r in rows]


READERS = {"gsm8k_aug": read_aug, "gsm8k": read_gsm8k_test, "gsm_hard": read_gsm_hard,
           "svamp": read_svamp, "multiarith": read_multiarith}
