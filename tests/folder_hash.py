"""``tree_digest``: the file list and contents of a folder, to show a run left its inputs as
they were (compare the digest before and after)."""

from __future__ import annotations

import hashlib
import os


def tree_digest(folder) -> dict[str, str]:
  """``{path relative to folder: sha256 hex}`` of every file under ``folder``; every folder
  (empty ones included) appears as ``"<path>/": "dir"`` so added folders show too."""
  out = {}
  for parent, dirs, names in os.walk(folder):
    rel = os.path.relpath(parent, folder)
    if rel != ".":
      out[rel + "/"] = "dir"
    for name in names:
      path = os.path.join(parent, name)
      digest = hashlib.sha256()
      with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
          digest.update(chunk)
      out[os.path.normpath(os.path.join(rel, name))] = digest.hexdigest()
  return out
