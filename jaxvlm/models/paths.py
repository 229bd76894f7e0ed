"""One rule for where a model comes from: a local folder, or a Hugging Face hub id.

Every loader (``load_pretrained``, ``load_tokenizer``, ``load_processor``) resolves its path here,
so a hub id behaves the same everywhere: with downloads allowed it is fetched (or found in the
cache) by ``huggingface_hub.snapshot_download``; with ``HF_HUB_OFFLINE=1`` it is taken from the
local Hugging Face cache when there, and is otherwise one error naming it.
"""

from __future__ import annotations

import os

from jaxvlm.errors import ConfigError, MissingFileError

_TRUE = {"1", "ON", "YES", "TRUE"}
# Formats the loaders never read: downloading them only costs time and disk.
_SKIPPED = ["*.bin", "*.pt", "*.pth", "*.h5", "*.msgpack", "*.onnx", "*.gguf", "original/*"]


def offline() -> bool:
  """Whether the environment forbids downloads (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``)."""
  return any(os.environ.get(k, "").upper() in _TRUE
             for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def is_hub_id(text: str) -> bool:
  """Whether ``text`` is a valid ``name`` or ``namespace/name`` hub repository id."""
  from huggingface_hub.utils import HFValidationError, validate_repo_id
  if text.startswith((".", "~")) or os.path.isabs(text):
    return False
  try:
    validate_repo_id(text)
  except HFValidationError:
    return False
  return True


def check_model_path(path_or_id: str, what: str = "model.path") -> str | None:
  """Checks, without downloading, that :func:`resolve_model_path` can give a folder; returns it
  when known now (a local folder, or a hub id in the cache under ``HF_HUB_OFFLINE=1``), None
  for a hub id to be downloaded. A path that is neither, or an offline hub id not in the cache,
  is one error naming ``what``."""
  path = os.fspath(path_or_id)
  if os.path.isdir(path):
    return path
  if os.path.exists(path):
    raise ConfigError(what, path, "a model folder (config.json + weights), not a file")
  if not is_hub_id(path):
    raise MissingFileError(path, f"{what} (a local model folder)")
  if not offline():
    return None
  import huggingface_hub
  try:
    return huggingface_hub.snapshot_download(path, local_files_only=True)
  except Exception:  # any failure here means: not in the cache
    raise ConfigError(what, path, "an existing local model folder; as a hub id it is not in "
                                  "the Hugging Face cache and HF_HUB_OFFLINE=1 forbids "
                                  "downloading it") from None


def resolve_model_path(path_or_id: str, what: str = "model.path") -> str:
  """The local folder of a model: ``path_or_id`` itself when it is a folder, else the snapshot
  of the hub id (downloaded only where the environment allows). ``what`` names the setting in
  errors: a path that is neither, or a hub id that cannot be had, is one error naming it."""
  known = check_model_path(path_or_id, what)
  if known is not None:
    return known
  import huggingface_hub
  try:
    return huggingface_hub.snapshot_download(path_or_id, ignore_patterns=_SKIPPED)
  except Exception as e:  # network, authentication and not-found errors alike
    reason = " ".join(str(e).split())[:200]
    raise ConfigError(what, path_or_id, f"an existing local model folder or a downloadable hub "
                                        f"id ({type(e).__name__}: {reason})") from None
