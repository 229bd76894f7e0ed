"""Tokenizers of HF checkpoint folders, through ``transformers.AutoTokenizer`` (offline)."""

from __future__ import annotations

import os

from jaxvlm.errors import MissingFileError
from jaxvlm.models.paths import resolve_model_path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


def load_tokenizer(path: str, padding_side: str = "left", trust_remote_code: bool = False,
                   what: str = "model.path"):
  """``AutoTokenizer.from_pretrained(path)`` with left padding (as batched generation needs);
  ``path`` is a local folder or a hub id (see :func:`jaxvlm.models.paths.resolve_model_path`,
  ``what`` names the setting in its errors).

  ``trust_remote_code`` runs the folder's own tokenizer code (InternVL2 / InternLM2 folders ship
  ``tokenization_internlm2.py``); without it such a folder is refused. Raises
  :class:`MissingFileError` when the folder has none of the tokenizer files.
  """
  path = resolve_model_path(path, what)
  if not any(os.path.exists(os.path.join(path, f)) for f in TOKENIZER_FILES):
    raise MissingFileError(os.path.join(path, "tokenizer.json"),
                           f"tokenizer (one of {', '.join(TOKENIZER_FILES)})")
  from transformers import AutoTokenizer
  tok = AutoTokenizer.from_pretrained(path, local_files_only=True,
                                      trust_remote_code=trust_remote_code)
  tok.padding_side = padding_side
  if tok.pad_token is None and tok.eos_token is not None:
    tok.pad_token = tok.eos_token
  return tok
