"""Generation defaults of a checkpoint folder (``generation_config.json``), as ``transformers`` reads them.

``load_pretrained`` keeps them on the model as ``model.generation_config``; ``generate`` and
``chat`` use them for every argument the caller leaves at ``None``. Without the file the ids come
from ``config.json`` (top level, else ``text_config``), as ``GenerationConfig.from_model_config``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from typing import Any, Mapping

import numpy as np

from jaxvlm.errors import CheckpointError

# Non-default values of these options change transformers' output; jaxvlm does not implement them.
_UNSUPPORTED = {"num_beams": 1, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
                "min_new_tokens": None, "min_length": 0, "length_penalty": 1.0,
                "typical_p": 1.0, "min_p": None, "bad_words_ids": None, "suppress_tokens": None,
                "begin_suppress_tokens": None, "forced_bos_token_id": None,
                "forced_eos_token_id": None}


def _ids(value) -> tuple[int, ...]:
  return () if value is None else tuple(int(i) for i in np.atleast_1d(value).tolist())


@dataclasses.dataclass(frozen=True)
class GenerationDefaults:
  """EOS ids (any of them stops a row), pad and bos ids, and the sampling defaults.

  ``do_sample=False`` is greedy whatever ``temperature`` says (as in ``transformers``); when
  sampling, ``transformers``' own defaults apply to unset fields (temperature 1, top-k 50, top-p 1).
  """

  eos_token_id: tuple[int, ...] = ()
  pad_token_id: int | None = None
  bos_token_id: int | None = None
  do_sample: bool = False
  temperature: float = 1.0
  top_k: int = 50
  top_p: float = 1.0
  max_new_tokens: int | None = None

  @classmethod
  def from_dict(cls, d: Mapping[str, Any], source: str = "") -> "GenerationDefaults":
    ignored = [k for k, default in _UNSUPPORTED.items() if d.get(k, default) != default]
    if ignored:
      warnings.warn(f"{source or 'generation config'}: {ignored} are not implemented by "
                    "jaxvlm.generate and are ignored", stacklevel=3)
    pick = lambda key, default: default if d.get(key) is None else d[key]
    pad = d.get("pad_token_id")
    return cls(eos_token_id=_ids(d.get("eos_token_id")),
               pad_token_id=None if pad is None else int(_ids(pad)[0]),
               bos_token_id=None if d.get("bos_token_id") is None else int(d["bos_token_id"]),
               do_sample=bool(pick("do_sample", False)),
               temperature=float(pick("temperature", 1.0)), top_k=int(pick("top_k", 50)),
               top_p=float(pick("top_p", 1.0)), max_new_tokens=d.get("max_new_tokens"))

  @classmethod
  def from_folder(cls, path: str, hf_config: Mapping[str, Any] | None = None) -> "GenerationDefaults":
    """``generation_config.json`` of ``path``, else the special ids of ``hf_config``."""
    file = os.path.join(path, "generation_config.json")
    if os.path.exists(file):
      try:
        with open(file) as f:
          return cls.from_dict(json.load(f), source=file)
      except json.JSONDecodeError as e:
        raise CheckpointError(f"{file}: not valid JSON ({e})") from None
    hf_config = dict(hf_config or {})
    text = hf_config.get("text_config") or hf_config.get("llm_config") or {}
    keys = ("eos_token_id", "pad_token_id", "bos_token_id")
    return cls.from_dict({k: hf_config.get(k, text.get(k)) for k in keys}, source=path)

  def to_hf(self) -> dict[str, Any]:
    """The ``generation_config.json`` dict (what :meth:`from_dict` reads back)."""
    d = dataclasses.asdict(self)
    d["eos_token_id"] = list(self.eos_token_id) if len(self.eos_token_id) != 1 else self.eos_token_id[0]
    return {k: v for k, v in d.items() if v is not None and v != []}

  def sampling(self) -> dict[str, float | int]:
    """``temperature`` / ``top_k`` / ``top_p`` for :func:`jaxvlm.generation.generate`."""
    if not self.do_sample:
      return dict(temperature=0.0, top_k=0, top_p=1.0)
    return dict(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)


def model_defaults(model) -> GenerationDefaults:
  """``model.generation_config`` when the model came from a folder, else the empty defaults."""
  return getattr(model, "generation_config", None) or GenerationDefaults()
