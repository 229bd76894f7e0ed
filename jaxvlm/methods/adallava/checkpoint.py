"""AdaLLaVA checkpoints in the published layout (``zhuoyan-xu/AdaLLaVA``, ``ada_llava_llama``).

The authors save their model from the original LLaVA code base: ``config.json`` with
``model_type: "ada_llava_llama"``, ``scheduler_type`` (``"L"``: layers, ``"H"``: heads),
``num_prefix_layers`` and the LLaMA sizes, and safetensors named

* ``model.embed_tokens`` / ``model.layers.{i}.*`` / ``model.norm`` / ``lm_head`` (the LM),
* ``model.mm_projector.{0,2}`` (the two-layer MLP connector),
* ``model.vision_tower.vision_tower.vision_model.*`` (CLIP; often absent: LLaVA reloads it from
  ``mm_vision_tower``, here the base LLaVA folder's vision tower is used),
* ``scheduler.mlp_head`` (the scheduler ``Linear(hidden, L - prefix)``) and
  ``scheduler.scheduler_up_proj.net.{0,1,3}`` (the latency encoder: LayerNorm, Linear, GELU,
  Linear).

The token controller is not in the published checkpoints; the project writes its own under
``token_controller.{feat,budget,out}`` (and head granularity's unit scheduler under
``unit_scheduler``, ``scheduler_type: "H"``), so an export imports back exactly.
:func:`import_published` reads such a folder (read-only) into :class:`AdaLlava` around a base HF
LLaVA folder (processor, tokenizer, vision tower); a tensor no rule maps is named in a
:class:`~jaxvlm.errors.CheckpointError` listing every such key. :func:`export_published` writes
the layout back.
"""

from __future__ import annotations

import os

import numpy as np
from flax import nnx

from jaxvlm.errors import CheckpointError, ConfigError
from jaxvlm.io import write_json
from jaxvlm.methods.adallava.modeling import AdaConfig, AdaLlava
from jaxvlm.models import weights
from jaxvlm.models.chat import load_processor
from jaxvlm.models.clip.params import module_rules, prefixed
from jaxvlm.models.registry import family_rules, get_family, read_config

MODEL_TYPE = "ada_llava_llama"
SCHEDULER_TYPES = {"layer": "L", "head": "H"}
# published prefix <-> HF LLaVA prefix (most specific first)
_PREFIXES = (("model.mm_projector.0.", "multi_modal_projector.linear_1."),
             ("model.mm_projector.2.", "multi_modal_projector.linear_2."),
             ("model.vision_tower.vision_tower.", "vision_tower."),
             ("lm_head.", "language_model.lm_head."),
             ("model.", "language_model.model."))
_HEAD_RULES = (
    module_rules("scheduler.", "", [("mlp_head", "scheduler")])
    + module_rules("scheduler.scheduler_up_proj.net.", "latency_encoder.",
                   [("0", "norm"), ("1", "fc1"), ("3", "fc2")])
    + module_rules("token_controller.", "controller.",
                   [("feat", "feat"), ("budget", "budget"), ("out", "out")])
    + module_rules("", "", [("unit_scheduler", "unit_scheduler")]))
_ADA_HEADS = ("scheduler.", "token_controller.", "unit_scheduler.")


def hf_name(published: str) -> str:
  """The HF LLaVA name of a published base tensor (AdaLLaVA heads keep theirs)."""
  if published.startswith(_ADA_HEADS):
    return published
  for old, new in _PREFIXES:
    if published.startswith(old):
      return new + published[len(old):]
  return published


def published_name(hf: str) -> str:
  """The inverse of :func:`hf_name`."""
  if hf.startswith(_ADA_HEADS):
    return hf
  for old, new in _PREFIXES:
    if hf.startswith(new):
      return old + hf[len(new):]
  return hf


def _rules(vlm_cfg) -> list[weights.Rule]:
  family = get_family(vlm_cfg.model_type)
  return prefixed(family_rules(family, vlm_cfg), "", "vlm.") + list(_HEAD_RULES)


def _check_config(path: str, hf: dict, cfg: AdaConfig, field: str) -> None:
  where = os.path.join(path, "config.json")
  if hf.get("model_type") != MODEL_TYPE:
    raise CheckpointError(f"{field}: {where} has model_type {hf.get('model_type')!r}, expected "
                          f"{MODEL_TYPE!r} (a published AdaLLaVA folder)")
  kind = hf.get("scheduler_type")
  if kind not in SCHEDULER_TYPES.values():
    raise CheckpointError(f"{field}: {where} has scheduler_type {kind!r}, expected 'L' or 'H'")
  if kind != SCHEDULER_TYPES[cfg.granularity]:
    raise CheckpointError(f"{field}: {where} has scheduler_type {kind!r} (granularity "
                          f"{'layer' if kind == 'L' else 'head'}), but "
                          f"model.adallava.granularity is {cfg.granularity!r}; a checkpoint of "
                          "the other granularity cannot be loaded")
  prefix = hf.get("num_prefix_layers")
  if prefix != cfg.prefix_layers:
    raise ConfigError("model.adallava.prefix_layers", cfg.prefix_layers,
                      f"{prefix} (num_prefix_layers of {where})")


def import_published(path: str, cfg: AdaConfig, base_folder: str, *, dtype=None,
                     field: str = "adallava_published"):
  """(:class:`AdaLlava`, processor) from the published folder ``path`` (read, never written)
  around the HF LLaVA folder ``base_folder`` (config, processor, and the vision tower when
  ``path`` has none). Every tensor of ``path`` must map to a parameter."""
  hf = read_config(path)
  _check_config(path, hf, cfg, field)
  base_hf = read_config(base_folder)
  family = get_family(base_hf["model_type"])
  dt = {} if dtype is None else {"dtype": dtype, "param_dtype": dtype}
  vlm_cfg = family.config_from_hf(base_hf, **dt)
  abstract = nnx.eval_shape(lambda: AdaLlava(family.model_cls(vlm_cfg, rngs=nnx.Rngs(0)), cfg,
                                             nnx.Rngs(0)))
  rules, params = _rules(vlm_cfg), weights.flat_params(abstract)
  published = weights.read_safetensors_folder(path)
  source = {hf_name(n): (published, n) for n in published.keys()}
  unmapped = sorted(n for n in published.keys() if not _maps(hf_name(n), rules, params))
  if unmapped:
    raise CheckpointError(f"{field}: {len(unmapped)} tensor(s) of {path} map to no AdaLLaVA "
                          f"parameter: {unmapped}")
  if not any(n.startswith("vision_tower.") for n in source):
    base = weights.read_safetensors_folder(base_folder)
    source.update({n: (base, n) for n in base.keys() if _vision(n)})
  tensors = _LazyTensors(source, path)
  model = weights.load_into(abstract, tensors, rules, ignore=family.ignore)
  return model, load_processor(base_folder)


def _vision(name: str) -> bool:
  return name.startswith(("vision_tower.", "model.vision_tower."))


def _maps(name: str, rules, params) -> bool:
  return any((t := r.match_hf(name)) is not None and all(x in params for x in t) for r in rules)


class _LazyTensors(dict):
  """HF name -> tensor, read from its file on access (``load_into`` takes a mapping)."""

  def __init__(self, source: dict, folder: str):
    super().__init__(source)
    self.folder = folder

  def __getitem__(self, name: str) -> np.ndarray:
    src, key = super().__getitem__(name)
    return src.get(key)


def export_published(model: AdaLlava, folder: str, dtype=None) -> str:
  """Writes ``model`` in the published layout (module docstring) to ``folder``: the LM sizes,
  ``scheduler_type`` and ``num_prefix_layers`` in ``config.json``, every tensor under its
  published name. Returns ``folder``."""
  vlm_cfg = model.vlm.config
  tensors = weights.export_tensors(model, _rules(vlm_cfg), dtype)
  os.makedirs(folder, exist_ok=True)
  weights.write_safetensors({published_name(k): v for k, v in tensors.items()}, folder)
  text = vlm_cfg.text
  write_json(os.path.join(folder, "config.json"), {
      "model_type": MODEL_TYPE, "architectures": ["AdaLlavaLlamaForCausalLM"],
      "scheduler_type": SCHEDULER_TYPES[model.config.granularity],
      "num_prefix_layers": model.config.prefix_layers,
      "hidden_size": text.hidden_size, "intermediate_size": text.intermediate_size,
      "num_hidden_layers": text.num_hidden_layers,
      "num_attention_heads": text.num_attention_heads,
      "num_key_value_heads": text.num_key_value_heads, "vocab_size": text.vocab_size,
      "rms_norm_eps": text.rms_norm_eps, "rope_theta": text.rope_theta,
      "mm_projector_type": "mlp2x_gelu", "mm_hidden_size": vlm_cfg.vision.hidden_size,
      "token_selecting": "adaptive"})
  return folder


__all__ = ["MODEL_TYPE", "export_published", "hf_name", "import_published", "published_name"]
