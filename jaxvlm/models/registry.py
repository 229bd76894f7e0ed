"""Model families by HF ``model_type``: build from a config, load from / save to a HF folder.

A :class:`Family` names how to turn a ``config.json`` dict into our frozen config, the nnx model
class, and the weight-name rules. Families register themselves in :data:`FAMILIES` on import of
their package (see ``_FAMILY_MODULES``), so ``load_pretrained`` only needs the folder.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from typing import Any, Callable, Sequence

import numpy as np
from flax import nnx

from jaxvlm.errors import ConfigError, MissingFileError, UnknownModelTypeError
from jaxvlm.generation.defaults import GenerationDefaults
from jaxvlm.models import weights
from jaxvlm.models.paths import resolve_model_path


@dataclasses.dataclass(frozen=True)
class Family:
  """How one ``model_type`` is built, loaded and saved."""

  model_type: str
  config_from_hf: Callable[..., Any]  # (hf_dict, **overrides) -> frozen config
  model_cls: type  # model_cls(config, rngs=nnx.Rngs)
  rules: Sequence[weights.Rule] | Callable[[Any], Sequence[weights.Rule]]  # or rules(config)
  ignore: Sequence[str] = ()  # regexes of HF tensor names that are skipped on load
  config_to_hf: Callable[[Any], dict] = lambda cfg: cfg.to_hf()


FAMILIES: dict[str, Family] = {}


def family_rules(family: Family, cfg) -> Sequence[weights.Rule]:
  """The weight rules of ``family`` for ``cfg`` (packed layouts need the head counts)."""
  return family.rules(cfg) if callable(family.rules) else family.rules

# model_type -> module whose import registers it (imported lazily).
_FAMILY_MODULES = {
    "llama": "jaxvlm.models.llama.family",
    "qwen2": "jaxvlm.models.llama.family",
    "llada": "jaxvlm.models.llada",
    "dream": "jaxvlm.models.dream",
    "Dream": "jaxvlm.models.dream",
    "qwen2_5_vl": "jaxvlm.models.qwen2_5_vl",
    "internvl": "jaxvlm.models.internvl",
    "internvl_chat": "jaxvlm.models.internvl",
    "internlm2": "jaxvlm.models.internlm2",
    "llava": "jaxvlm.models.llava",
    "clip_vision_model": "jaxvlm.models.clip",
    "clip": "jaxvlm.models.clip",
}


def register_family(family: Family) -> Family:
  """Makes ``family.model_type`` loadable by :func:`load_pretrained` / :func:`from_config`."""
  FAMILIES[family.model_type] = family
  return family


def get_family(model_type: str) -> Family:
  if model_type not in FAMILIES and model_type in _FAMILY_MODULES:
    try:
      importlib.import_module(_FAMILY_MODULES[model_type])
    except ModuleNotFoundError as e:
      raise UnknownModelTypeError(model_type, list(FAMILIES)) from e
  if model_type not in FAMILIES:
    raise UnknownModelTypeError(model_type, sorted(set(FAMILIES) | set(_FAMILY_MODULES)))
  return FAMILIES[model_type]


def read_config(path: str) -> dict:
  file = os.path.join(path, "config.json")
  if not os.path.exists(file):
    raise MissingFileError(file, "config.json of the checkpoint folder")
  with open(file) as f:
    hf = json.load(f)
  if "model_type" not in hf:
    raise ConfigError(f"{file}: model_type", None, "a model_type field")
  return hf


def _dtype_overrides(dtype, param_dtype) -> dict:
  out = {}
  if dtype is not None:
    out["dtype"] = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
  if param_dtype is not None or dtype is not None:
    pd = param_dtype if param_dtype is not None else dtype
    out["param_dtype"] = np.dtype(pd).name if not isinstance(pd, str) else pd
  return out


def config_from_hf(hf_config: dict, dtype=None, param_dtype=None, **overrides):
  family = get_family(hf_config.get("model_type"))
  return family.config_from_hf(hf_config, **_dtype_overrides(dtype, param_dtype), **overrides)


def from_config(hf_config: dict, seed: int = 0, dtype=None, param_dtype=None, mesh=None,
                rules=None, **overrides) -> nnx.Module:
  """Randomly initialised model for an HF config dict (sharded on ``mesh`` when given)."""
  family = get_family(hf_config.get("model_type"))
  cfg = family.config_from_hf(hf_config, **_dtype_overrides(dtype, param_dtype), **overrides)
  build = lambda: family.model_cls(cfg, rngs=nnx.Rngs(seed))
  from jaxvlm.sharding import mesh as mesh_lib
  return mesh_lib.init_sharded(build, mesh, rules or mesh_lib.LOGICAL_RULES_FSDP)


def load_pretrained(path: str, dtype=None, param_dtype=None, mesh=None, rules=None,
                    what: str = "model.path", **overrides) -> nnx.Module:
  """Loads a HF folder (``config.json`` + safetensors, single or sharded): a local folder, or a
  hub id as :func:`jaxvlm.models.paths.resolve_model_path` allows (``what`` names the setting).

  ``dtype`` is the compute dtype, ``param_dtype`` the storage dtype (defaults to ``dtype``).
  The folder's ``generation_config.json`` (EOS / pad / bos ids, sampling defaults) is kept as
  ``model.generation_config`` for ``generate`` and ``chat``. With a ``mesh``, each tensor goes
  straight to the sharding its logical axes map to.
  """
  path = resolve_model_path(path, what)
  hf = read_config(path)
  family = get_family(hf["model_type"])
  cfg = family.config_from_hf(hf, **_dtype_overrides(dtype, param_dtype), **overrides)
  abstract = nnx.eval_shape(lambda: family.model_cls(cfg, rngs=nnx.Rngs(0)))
  sharding_fn = None
  if mesh is not None:
    from jax.sharding import NamedSharding
    from jaxvlm.sharding import mesh as mesh_lib
    rules = rules or mesh_lib.LOGICAL_RULES_FSDP
    sharding_fn = lambda var: NamedSharding(mesh, mesh_lib.param_spec(
        var.shape, var.get_metadata().get("logical_axes"), rules, mesh))
  source = weights.read_safetensors_folder(path)
  model = weights.load_into(abstract, source, family_rules(family, cfg), sharding_fn=sharding_fn,
                            ignore=family.ignore)
  model.generation_config = GenerationDefaults.from_folder(path, hf)  # generate()'s defaults
  return model


def _keep_missing(ours: dict, source: dict) -> dict:
  """``ours`` plus every key of ``source`` it lacks, sub-config dicts merged the same way."""
  out = dict(ours)
  for key, value in source.items():
    if key not in out:
      out[key] = value
    elif isinstance(value, dict) and isinstance(out[key], dict):
      out[key] = _keep_missing(out[key], value)
  return out


def save_pretrained(model: nnx.Module, path: str, dtype=None, max_shard_bytes: int = 4 << 30,
                    source_config: dict | None = None) -> None:
  """Writes ``config.json`` + safetensors that ``transformers`` (and :func:`load_pretrained`) read.

  ``source_config``: the HF config the model was built or loaded from; its keys that the
  model's own config does not write (special-token ids, remote-code fields) are kept."""
  cfg = model.config
  family = get_family(cfg.model_type)
  tensors = weights.export_tensors(model, family_rules(family, cfg), dtype)
  weights.write_safetensors(tensors, path, max_shard_bytes)
  hf = _keep_missing(family.config_to_hf(cfg), source_config or {})
  hf["torch_dtype"] = hf["dtype"] = np.dtype(dtype or next(iter(tensors.values())).dtype).name
  from jaxvlm.io import write_json
  write_json(os.path.join(path, "config.json"), hf)
  if getattr(model, "generation_config", None) is not None:
    write_json(os.path.join(path, "generation_config.json"), model.generation_config.to_hf())
