"""Cached parts of runs keyed by every setting and input file that changes them.

A cached part (a base model, an ablation row, beams, embeddings, predictions, a sweep point) lives
in ``<root>/<name>-<fingerprint>/`` where the fingerprint hashes the settings it was computed
under and the identity (path, size, mtime) of its input files. A re-run with other settings gets
another folder and computes anew beside the old results; it can never read them back.

Line-per-record caches (``append_jsonl`` / ``read_jsonl``) are appended with one flushed, fsynced
write per record; a kill mid-append leaves at most a torn last line, which the next read drops.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import re
from typing import Any, Iterable

import ml_collections

from jaxvlm.errors import ConfigError, DataFileError, MissingFileError, SettingsChangedError
from jaxvlm.io import write_json

SETTINGS_FILE = "settings.json"
VALUE_FILE = "value.json"
_NAME = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.+=-]*$")


def canonical(settings: Any, where: str = "settings") -> Any:
  """``settings`` as plain JSON values: config dicts and dataclasses as dicts with string keys,
  tuples as lists, numpy scalars and arrays as numbers and lists."""
  if isinstance(settings, ml_collections.ConfigDict):
    settings = {k: settings[k] for k in settings.keys()}
  elif dataclasses.is_dataclass(settings) and not isinstance(settings, type):
    settings = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
  if isinstance(settings, dict):
    return {str(k): canonical(v, f"{where}.{k}") for k, v in settings.items()}
  if isinstance(settings, (list, tuple)):
    return [canonical(v, f"{where}[{i}]") for i, v in enumerate(settings)]
  if settings is None or isinstance(settings, (bool, int, float, str)):
    return settings
  if hasattr(settings, "tolist"):
    return canonical(settings.tolist(), where)
  raise ConfigError(where, settings, "a JSON-like setting (number, string, bool, None, "
                                     "list, dict or config dict)")


def file_identity(path: str) -> list:
  """[absolute path, size, mtime_ns] of a file, or of every file under a folder (sorted)."""
  path = os.path.abspath(path)
  if os.path.isfile(path):
    st = os.stat(path)
    return [[path, st.st_size, st.st_mtime_ns]]
  if not os.path.isdir(path):
    raise MissingFileError(path, "input of a cached result")
  out = []
  for parent, dirs, names in os.walk(path):
    dirs.sort()
    for name in sorted(names):
      out += file_identity(os.path.join(parent, name))
  return out


def _key(settings: Any, files: Iterable[str]) -> dict:
  return {"settings": canonical(settings),
          "files": [ident for f in files for ident in file_identity(os.fspath(f))]}


def fingerprint(settings: Any, files: Iterable[str] = ()) -> str:
  """16 hex characters of the sha256 of the canonical JSON (sorted keys) of ``settings`` and of
  the identity (absolute path, size, mtime_ns) of every input file, or every file of a folder."""
  text = json.dumps(_key(settings, files), sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def flatten(settings: Any) -> dict[str, Any]:
  """Dotted key -> leaf value of the canonical settings (an empty dict is a leaf)."""
  out = {}

  def walk(prefix: str, node: Any) -> None:
    if isinstance(node, dict) and node:
      for k, v in node.items():
        walk(f"{prefix}.{k}" if prefix else k, v)
    else:
      out[prefix] = node

  walk("", canonical(settings))
  return out


def _show(value: Any) -> str:
  return value if isinstance(value, str) else json.dumps(value)


def describe(settings: Any) -> str:
  """Markdown bullet lines ``- key = value``, one per dotted key, sorted."""
  return "\n".join(f"- {k} = {_show(v)}" for k, v in sorted(flatten(settings).items()))


def changed_keys(old: Any, new: Any) -> list[str]:
  """Sorted dotted keys whose values differ between two settings (or exist in only one)."""
  a, b = flatten(old), flatten(new)
  missing = object()
  return sorted(k for k in set(a) | set(b) if a.get(k, missing) != b.get(k, missing))


def refuse_changed(what: str, old: Any, new: Any, ignore: Iterable[str] = (),
                   remedy: str = "use another run folder, or the settings it was computed under"
                   ) -> None:
  """Raises :class:`SettingsChangedError` naming every dotted key (but those in ``ignore`` or
  under them) whose value differs between the settings ``what`` was computed under and now."""
  ignore = tuple(ignore)
  a, b = flatten(old), flatten(new)
  keys = [k for k in changed_keys(old, new)
          if not any(k == i or k.startswith(i + ".") for i in ignore)]
  if keys:
    raise SettingsChangedError(what, {k: (a.get(k), b.get(k)) for k in keys}, remedy)


class RunCache:
  """A folder of cached parts, each in ``<root>/<name>-<fingerprint>/`` beside its settings."""

  def __init__(self, root: str):
    self.root = root

  def path(self, name: str, settings: Any, files: Iterable[str] = ()) -> str:
    """The folder of the part ``name`` computed under ``settings`` (not created)."""
    if not _NAME.match(name):
      raise ConfigError("cache part name", name, "letters, digits and . _ + = - only")
    return os.path.join(self.root, f"{name}-{fingerprint(settings, files)}")

  def entry(self, name: str, settings: Any, files: Iterable[str] = ()) -> str:
    """The folder of the part ``name`` for these settings, created, with ``settings.json``
    (the settings and input files it was computed under) written atomically."""
    files = list(files)
    folder = self.path(name, settings, files)
    os.makedirs(folder, exist_ok=True)
    settings_path = os.path.join(folder, SETTINGS_FILE)
    if not os.path.exists(settings_path):
      write_json(settings_path, _key(settings, files))
    return folder

  def load(self, name: str, settings: Any, files: Iterable[str] = ()) -> Any | None:
    """The JSON value ``save`` stored for exactly these settings and files, else None."""
    path = os.path.join(self.path(name, settings, files), VALUE_FILE)
    if not os.path.exists(path):
      return None
    with open(path, encoding="utf-8") as f:
      try:
        return json.load(f)["value"]
      except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataFileError(path, f"not a cached value ({e}); delete the file to recompute it")

  def save(self, name: str, settings: Any, value: Any, files: Iterable[str] = ()) -> None:
    """Stores the JSON ``value`` for these settings and files (atomic: complete or absent)."""
    folder = self.entry(name, settings, files)
    write_json(os.path.join(folder, VALUE_FILE), {"value": value})

  def stored(self, name: str) -> list[dict]:
    """The settings of every part ``name`` stored under ``root`` (any settings)."""
    out = []
    for path in sorted(glob.glob(os.path.join(glob.escape(self.root), f"{name}-*",
                                              SETTINGS_FILE))):
      if re.fullmatch(re.escape(name) + r"-[0-9a-f]{16}", os.path.basename(os.path.dirname(path))):
        with open(path, encoding="utf-8") as f:
          out.append(json.load(f)["settings"])
    return out


def append_jsonl(path: str, record: dict) -> None:
  """Appends ``record`` as one JSON line, flushed and fsynced; a torn last line left by an earlier
  kill is dropped first, so the new record starts on a line of its own."""
  line = json.dumps(canonical(record, os.path.basename(path)), sort_keys=True) + "\n"
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "ab+") as f:
    _drop_torn_tail(f)
    f.write(line.encode())
    f.flush()
    os.fsync(f.fileno())


def _drop_torn_tail(f) -> None:
  """Truncates an open binary file after its last newline (no-op if it ends with one)."""
  end = f.seek(0, os.SEEK_END)
  pos = end
  while pos > 0:
    start = max(0, pos - 65536)
    f.seek(start)
    chunk = f.read(pos - start)
    if pos == end and chunk.endswith(b"\n"):
      return
    i = chunk.rfind(b"\n")
    if i >= 0:
      f.truncate(start + i + 1)
      return
    pos = start
  f.truncate(0)


def read_jsonl(path: str) -> list[dict]:
  """The records of a cache jsonl file ([] if absent). A torn last line (no newline, or not JSON)
  is dropped and the file truncated after the last good line; a bad line elsewhere raises
  :class:`DataFileError` naming the file and line."""
  if not os.path.exists(path):
    return []
  with open(path, "rb") as f:
    data = f.read()
  lines = data.split(b"\n")
  complete, tail = lines[:-1], lines[-1]
  records, good_end, offset = [], 0, 0
  for number, raw in enumerate(complete, 1):
    offset += len(raw) + 1
    if not raw.strip():
      good_end = offset
      continue
    try:
      record = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      if number == len(complete) and not tail:
        break
      raise DataFileError(path, f"line {number}: not JSON ({e})") from None
    if not isinstance(record, dict):
      raise DataFileError(path, f"line {number}: got {type(record).__name__}, "
                                "expected a JSON object")
    records.append(record)
    good_end = offset
  if good_end < len(data):
    with open(path, "r+b") as f:
      f.truncate(good_end)
  return records
