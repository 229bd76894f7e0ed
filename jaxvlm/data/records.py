"""Reading json / jsonl data files with errors that name the file, the line and the field.

Every data reader (GSM8K, VQA, TextVQA, ...) parses through these: malformed JSON names the file
and line, a record without a required field names the file that lacks it, and a field of the
wrong type (a string where a list of answers is expected) is refused instead of being iterated.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Iterator

from jaxvlm.errors import DataFileError, MissingFileError


def read_json(path: str, what: str) -> Any:
  """The parsed content of the json file ``path`` (``what`` names it when absent)."""
  if not os.path.exists(path):
    raise MissingFileError(path, what)
  with open(path, "rb") as f:
    data = f.read()
  try:
    return json.loads(data)
  except json.JSONDecodeError as e:
    raise DataFileError(path, f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}"
                        ) from None
  except UnicodeDecodeError as e:
    raise DataFileError(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None


def json_lines(path: str, what: str) -> Iterator[tuple[int, dict]]:
  """(line number, object) for every non-blank line of the jsonl file ``path``."""
  if not os.path.exists(path):
    raise MissingFileError(path, what)
  with open(path, "rb") as f:
    for n, raw in enumerate(f, 1):
      if not raw.strip():
        continue
      try:
        record = json.loads(raw)
      except json.JSONDecodeError as e:
        raise DataFileError(path, f"line {n}: malformed JSON at column {e.colno}: {e.msg}"
                            ) from None
      except UnicodeDecodeError as e:
        raise DataFileError(path, f"line {n}: not UTF-8 text ({e.reason})") from None
      if not isinstance(record, dict):
        raise DataFileError(path, f"line {n}: got a JSON {type(record).__name__}, "
                                  "expected an object")
      yield n, record


def require(record: Any, fields: Iterable[str], path: str, where: str) -> None:
  """``record`` is an object holding every one of ``fields``; else an error naming ``path``."""
  fields = list(fields)
  if not isinstance(record, dict):
    raise DataFileError(path, f"{where}: got {type(record).__name__}, expected an object with "
                              f"{', '.join(fields)}")
  missing = [f for f in fields if f not in record]
  if missing:
    raise DataFileError(path, f"{where} lacks {', '.join(repr(f) for f in missing)} "
                              f"(has {sorted(record)})")


def text(record: dict, field: str, path: str, where: str) -> str:
  """The string (or number, as text) ``record[field]``; other types are refused."""
  value = record[field]
  if isinstance(value, bool) or not isinstance(value, (str, int, float)):
    raise DataFileError(path, f"{where}: field {field!r} is {value!r}, expected a string")
  return str(value)


def integer(record: dict, field: str, path: str, where: str) -> int:
  """The integer ``record[field]`` (an int, or a string of digits)."""
  value = record[field]
  if isinstance(value, int) and not isinstance(value, bool):
    return value
  if isinstance(value, str) and value.strip().lstrip("-").isdigit():
    return int(value)
  raise DataFileError(path, f"{where}: field {field!r} is {value!r}, expected an integer")


def text_list(record: dict, field: str, path: str, where: str) -> tuple[str, ...]:
  """The list of strings ``record[field]``; a lone string (``"yes"``) is refused, not split."""
  value = record[field]
  if not isinstance(value, list):
    raise DataFileError(path, f"{where}: field {field!r} is {value!r}, expected a list of "
                              "strings")
  return tuple(text({field: v}, field, path, f"{where}, item {i} of {field!r}")
               for i, v in enumerate(value))


def annotation_answers(annotation: dict, path: str, where: str) -> tuple[str, ...]:
  """The ten annotator answers of a VQA-format annotation (``answers``: ``{"answer": ...}``
  objects), each a string; errors name ``path`` and ``where``."""
  require(annotation, ("answers",), path, where)
  if not isinstance(annotation["answers"], list):
    raise DataFileError(path, f"{where}: field 'answers' is {annotation['answers']!r}, "
                              "expected a list of {\"answer\": ...} objects")
  out = []
  for i, x in enumerate(annotation["answers"]):
    require(x, ("answer",), path, f"{where}, answer {i}")
    out.append(text(x, "answer", path, f"{where}, answer {i}"))
  return tuple(out)

