"""GSM8K-format jsonl: one ``{"question": ..., "answer": "... #### N"}`` object per line.

Also the KAVA readers (``READERS``): GSM8K-AUG / AUG-NL, the GSM8K test set, GSM8K-Hard, SVAMP
and MultiArith as published, each returning ``{"question", "cot", "answer"}`` records with the
answer number normalised (``cot`` empty for the evaluation-only sets).
"""

from __future__ import annotations

import os

from jaxvlm.data import records
from jaxvlm.errors import ConfigError, DataFileError, MissingFileError
from jaxvlm.eval.gsm8k import normalize_number


def read_jsonl(path: str, limit: int | None = None) -> list[dict]:
  """The ``question``/``answer`` records of a GSM8K jsonl file (first ``limit`` if given)."""
  out = []
  for n, record in records.json_lines(path, "GSM8K jsonl"):
    where = f"line {n}"
    records.require(record, ("question", "answer"), path, where)
    out.append({"question": records.text(record, "question", path, where),
                "answer": records.text(record, "answer", path, where)})
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


def _load_json_records(path: str, what: str) -> list[tuple[str, str, dict]]:
  """(``line n`` / ``item i``, ``path:n`` / ``path[i]``, object) of every record of a json array
  file or a jsonl file."""
  if not os.path.exists(path):
    raise MissingFileError(path, what)
  with open(path, "rb") as f:
    is_array = f.read(4096).lstrip().startswith(b"[")
  if not is_array:
    return [(f"line {n}", f"{path}:{n}", r) for n, r in records.json_lines(path, what)]
  data = records.read_json(path, what)
  return [(f"item {i}", f"{path}[{i}]", r) for i, r in enumerate(data)]


def read_aug(path: str, limit: int | None = None) -> list[dict]:
  """GSM8K-AUG / GSM8K-AUG-NL jsonl (``whynlp/gsm8k-aug``): either ``{"question", "cot",
  "answer"}`` (answer = the number) or ``{"question", "answer": "<<a*b=c>> ... #### N"}``."""
  out = []
  for where, loc, r in _load_json_records(path, "GSM8K-AUG jsonl")[:limit]:
    records.require(r, ("question", "answer"), path, where)
    question, answer = (records.text(r, k, path, where) for k in ("question", "answer"))
    if "cot" in r:  # cot: one string, or a list of step strings (some conversions)
      cot = (records.text(r, "cot", path, where) if not isinstance(r["cot"], list)
             else " ".join(records.text_list(r, "cot", path, where)))
      final = (split_solution(answer, f"{loc}.answer")[1] if "####" in answer
               else normalize_number(answer))
    else:
      cot, final = split_solution(answer, f"{loc}.answer")
    out.append({"question": question.strip(), "cot": cot.strip(), "answer": final})
  return out


def read_gsm8k_test(path: str, limit: int | None = None) -> list[dict]:
  """The GSM8K test jsonl (``openai/grade-school-math``): the solution text is the CoT."""
  return [{"question": r["question"].strip(), **dict(zip(("cot", "answer"), split_solution(
      r["answer"], f"{path}:{n}.answer")))} for n, r in enumerate(read_jsonl(path, limit), 1)]


def _eval_records(path: str, what: str, limit: int | None, question, answer: str) -> list[dict]:
  """``{"question", "cot": "", "answer"}`` of an evaluation-only set whose records hold the
  fields ``question`` (a field name, or a tuple of fields joined by a space) and ``answer``."""
  fields = (question,) if isinstance(question, str) else tuple(question)
  out = []
  for where, _, r in _load_json_records(path, what)[:limit]:
    records.require(r, fields + (answer,), path, where)
    value = r[answer]
    if isinstance(value, list):  # MultiArith: lSolutions, the first is the answer
      if not value:
        raise DataFileError(path, f"{where}: field {answer!r} is empty, expected a number")
      value = value[0]
    number = records.text({answer: value}, answer, path, where)
    out.append({"question": " ".join(records.text(r, k, path, where).strip() for k in fields),
                "cot": "", "answer": normalize_number(number)})
  return out


def read_gsm_hard(path: str, limit: int | None = None) -> list[dict]:
  """GSM8K-Hard (``reasoning-machines/gsm-hard``) jsonl: ``{"input", "code", "target"}``."""
  return _eval_records(path, "GSM8K-Hard jsonl", limit, "input", "target")


def read_svamp(path: str, limit: int | None = None) -> list[dict]:
  """SVAMP (``arkilpatel/SVAMP`` ``SVAMP.json``): ``{"Body", "Question", "Equation", "Answer"}``;
  the question is ``Body + " " + Question``."""
  return _eval_records(path, "SVAMP json", limit, ("Body", "Question"), "Answer")


def read_multiarith(path: str, limit: int | None = None) -> list[dict]:
  """MultiArith (``MultiArith.json``): ``{"sQuestion", "lEquations", "lSolutions"}``."""
  return _eval_records(path, "MultiArith json", limit, "sQuestion", "lSolutions")


READERS = {"gsm8k_aug": read_aug, "gsm8k": read_gsm8k_test, "gsm_hard": read_gsm_hard,
           "svamp": read_svamp, "multiarith": read_multiarith}
