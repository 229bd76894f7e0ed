"""LoRA adapters on ``Linear`` layers chosen by attribute-path regex, with PEFT-format export.

``y = base(x) + dropout(x) @ A @ B * (alpha / rank)`` with ``A [in, r]`` (PEFT's kaiming-uniform
init) and ``B [r, out]`` (zeros), both ``nnx.LoRAParam`` so that ``nnx.LoRAParam`` selects exactly
the adapter for training. Adapters are saved in PEFT's layout (``adapter_model.safetensors`` with
``base_model.model.<path>.lora_A.weight [r, in]`` / ``lora_B.weight [out, r]`` and
``adapter_config.json``), which ``peft.PeftModel.from_pretrained`` loads.

``train_rows`` makes chosen rows of a token embedding trainable (e.g. reserved special tokens that
a method gives a new meaning) while the rest stays frozen: a ``SpecialRows`` wrapper adds an
``nnx.LoRAParam`` delta ``[n, H]`` (zeros at the start) to those rows, in the input lookup and in
the tied output head alike, so the ``nnx.LoRAParam`` filter selects it with the adapters. It is
exported as PEFT's trainable tokens (``trainable_token_indices``; the tensor
``...embed_tokens.token_adapter.trainable_tokens_delta`` holds the rows' new values).
"""

from __future__ import annotations

import json
import os
import re
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import load_file, save

from jaxvlm.errors import CheckpointError, ConfigError
from jaxvlm.io import atomic_open, write_json
from jaxvlm.layers.linear import Cut, Embed, Linear, cut

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
PEFT_PREFIX = "base_model.model."


class LoRALinear(nnx.Module):
  """A frozen ``Linear`` plus a rank-``rank`` update scaled by ``alpha / rank``."""

  def __init__(self, base: Linear, rank: int, alpha: float, dropout: float, *, rngs: nnx.Rngs):
    if rank < 1:
      raise ConfigError("lora.rank", rank, "an int >= 1")
    in_axis, out_axis = base.kernel.get_metadata().get("logical_axes", (None, None))
    pdt = base.kernel[...].dtype
    bound = 1.0 / np.sqrt(base.in_features)
    self.base, self.rank, self.alpha = base, rank, float(alpha)
    self.lora_a = nnx.LoRAParam(
        jax.random.uniform(rngs.params(), (base.in_features, rank), pdt, -bound, bound),
        logical_axes=(in_axis, None))
    self.lora_b = nnx.LoRAParam(jnp.zeros((rank, base.out_features), pdt),
                                logical_axes=(None, out_axis))
    self.dropout = nnx.Dropout(dropout, rngs=rngs)

  @property
  def scale(self) -> float:
    return self.alpha / self.rank

  def delta(self) -> jax.Array:
    """The dense update ``A @ B * scale`` ``[in, out]`` in the parameter dtype."""
    return self.lora_a[...] @ self.lora_b[...] * self.scale

  def __call__(self, x: jax.Array, *, cut_in: Cut | None = None, cut_out: Cut | None = None,
               bias_scale: jax.Array | None = None) -> jax.Array:
    """The adapted layer; the cuts and bias scale act as in ``Linear.__call__`` (``A``'s rows
    are cut with the kernel's, ``B``'s columns with its columns)."""
    dt = self.base.dtype
    h = self.dropout(x).astype(dt) @ cut(self.lora_a[...], cut_in, 0).astype(dt)
    y = self.base(x, cut_in=cut_in, cut_out=cut_out, bias_scale=bias_scale)
    return y + (h @ cut(self.lora_b[...], cut_out, 1).astype(dt)) * jnp.asarray(self.scale, dt)


class SpecialRows(nnx.Module):
  """An ``Embed`` whose rows ``ids`` are ``base`` rows plus a trainable delta."""

  def __init__(self, base: Embed, ids: Iterable[int]):
    self.base, self.ids = base, tuple(int(i) for i in ids)
    vocab, dim = base.embedding[...].shape
    if not self.ids or min(self.ids) < 0 or max(self.ids) >= vocab or len(set(self.ids)) != len(
        self.ids):
      raise ConfigError("lora.special_ids", self.ids, f"distinct token ids in [0, {vocab})")
    self.dtype = base.dtype
    self.delta = nnx.LoRAParam(jnp.zeros((len(self.ids), dim), base.embedding[...].dtype),
                               logical_axes=(None, "embed"))

  def table(self) -> jax.Array:
    """The effective embedding matrix ``[vocab, H]``."""
    return self.base.embedding[...].at[jnp.asarray(self.ids)].add(self.delta[...])

  def __call__(self, ids: jax.Array) -> jax.Array:
    hit = (ids[..., None] == jnp.asarray(self.ids)).astype(self.delta[...].dtype)
    return self.base(ids) + (hit @ self.delta[...]).astype(self.dtype)

  def attend(self, x: jax.Array) -> jax.Array:
    extra = jnp.dot(x.astype(self.dtype), self.delta[...].astype(self.dtype).T)
    return self.base.attend(x).at[..., jnp.asarray(self.ids)].add(extra)


def train_rows(model: nnx.Module, ids: Iterable[int], path: str = "model.embed_tokens"
               ) -> SpecialRows:
  """Wraps the ``Embed`` at dotted ``path`` of ``model`` in ``SpecialRows`` (in place)."""
  keys = tuple(int(k) if k.isdigit() else k for k in path.split("."))
  parent = model
  for key in keys:
    parent = _get(parent, key)
  if not isinstance(parent, Embed):
    raise ConfigError("lora.train_special_embeddings", path, "the path of an Embed module")
  rows = SpecialRows(parent, ids)
  _set(model, keys, rows)
  return rows


def special_rows(model: nnx.Module) -> dict[str, SpecialRows]:
  """``{dotted path: SpecialRows}`` of ``model``."""
  return {_name(p): m for p, m in nnx.iter_modules(model) if isinstance(m, SpecialRows)}


def target_regex(targets: str | Iterable[str]) -> str:
  """A regex string as-is, or module names (``q_proj``) as a regex on the last path part."""
  if isinstance(targets, str):
    return targets
  return r"(^|\.)(" + "|".join(map(re.escape, targets)) + r")$"


def _get(parent, key):
  return parent[key] if isinstance(key, int) else getattr(parent, key)


def _set(root: nnx.Module, path: tuple, value: nnx.Module) -> None:
  parent = root
  for key in path[:-1]:
    parent = _get(parent, key)
  if isinstance(path[-1], int):
    parent[path[-1]] = value
  else:
    setattr(parent, path[-1], value)


def _name(path: tuple) -> str:
  return ".".join(map(str, path))


def lora_modules(model: nnx.Module) -> dict[str, LoRALinear]:
  """``{dotted path: LoRALinear}`` of every adapter in ``model``."""
  return {_name(p): m for p, m in nnx.iter_modules(model) if isinstance(m, LoRALinear)}


def apply_lora(model: nnx.Module, targets: str | Iterable[str] = DEFAULT_TARGETS, rank: int = 8,
               alpha: float = 16.0, dropout: float = 0.0, seed: int = 0) -> list[str]:
  """Wraps every ``Linear`` whose dotted path matches ``targets`` in place; returns the paths."""
  pattern = re.compile(target_regex(targets))
  chosen = [(p, m) for p, m in nnx.iter_modules(model)
            if isinstance(m, Linear) and pattern.search(_name(p))]
  if not chosen:
    raise ConfigError("lora.targets", targets, "a pattern matching at least one Linear layer")
  rngs = nnx.Rngs(params=seed, dropout=seed + 1)
  for path, module in chosen:
    _set(model, path, LoRALinear(module, rank, alpha, dropout, rngs=rngs))
  return [_name(p) for p, _ in chosen]


def merge_lora(model: nnx.Module) -> nnx.Module:
  """Folds every adapter (and trained embedding rows) into its base and puts the plain ``Linear``
  (``Embed``) back (in place)."""
  for name, module in lora_modules(model).items():
    base = module.base
    base.kernel[...] = (base.kernel[...] + module.delta()).astype(base.kernel[...].dtype)
    _set(model, tuple(int(k) if k.isdigit() else k for k in name.split(".")), base)
  for name, rows in special_rows(model).items():
    rows.base.embedding[...] = rows.table().astype(rows.base.embedding[...].dtype)
    _set(model, tuple(int(k) if k.isdigit() else k for k in name.split(".")), rows.base)
  return model


def save_adapter(model: nnx.Module, path: str, base_model_name_or_path: str = "") -> None:
  """Writes the adapters alone as a PEFT LoRA folder."""
  modules = lora_modules(model)
  if not modules:
    raise ConfigError("model", type(model).__name__, "a model with LoRA adapters (apply_lora)")
  first = next(iter(modules.values()))
  tensors = {}
  for name, m in modules.items():
    tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = np.ascontiguousarray(
        np.asarray(m.lora_a[...], np.float32).T)
    tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = np.ascontiguousarray(
        np.asarray(m.lora_b[...], np.float32).T)
  tokens = {}
  for name, rows in special_rows(model).items():  # PEFT stores the rows' new values
    tensors[f"{PEFT_PREFIX}{name}.token_adapter.trainable_tokens_delta"] = np.ascontiguousarray(
        np.asarray(rows.table()[jnp.asarray(rows.ids)], np.float32))
    tokens[name.rsplit(".", 1)[-1]] = list(rows.ids)
  os.makedirs(path, exist_ok=True)
  with atomic_open(os.path.join(path, "adapter_model.safetensors"), "wb") as f:
    f.write(save(tensors, metadata={"format": "pt"}))
  write_json(os.path.join(path, "adapter_config.json"), {
      "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": first.rank, "lora_alpha": first.alpha,
      "lora_dropout": float(first.dropout.rate), "bias": "none", "fan_in_fan_out": False,
      "target_modules": sorted({n.rsplit(".", 1)[-1] for n in modules}),
      "base_model_name_or_path": base_model_name_or_path, "inference_mode": True,
      "init_lora_weights": True, "use_rslora": False, "use_dora": False,
      "modules_to_save": None, **({"trainable_token_indices": tokens} if tokens else {})})


def load_adapter(model: nnx.Module, path: str) -> nnx.Module:
  """Adds the PEFT adapter in folder ``path`` to ``model`` (in place) and returns it."""
  config_path = os.path.join(path, "adapter_config.json")
  weights_path = os.path.join(path, "adapter_model.safetensors")
  for p in (config_path, weights_path):
    if not os.path.exists(p):
      raise CheckpointError(f"LoRA adapter: file {p!r} does not exist")
  with open(config_path) as f:
    cfg = json.load(f)
  apply_lora(model, cfg["target_modules"], cfg["r"], cfg["lora_alpha"],
             cfg.get("lora_dropout", 0.0))
  tensors = load_file(weights_path)
  modules = lora_modules(model)
  names = {f"{PEFT_PREFIX}{n}.lora_{ab}.weight" for n in modules for ab in "AB"}
  embeds = [_name(q) for q, m in nnx.iter_modules(model) if isinstance(m, Embed)]
  for module_name, ids in cfg.get("trainable_token_indices", {}).items():
    found = [n for n in embeds if n.rsplit(".", 1)[-1] == module_name]
    if len(found) != 1:
      raise CheckpointError(f"LoRA adapter {path!r}: trainable tokens of {module_name!r} match "
                            f"embeddings {found} (expected one)")
    rows = train_rows(model, ids, found[0])
    key = f"{PEFT_PREFIX}{found[0]}.token_adapter.trainable_tokens_delta"
    names.add(key)
    if key in tensors:
      new = jnp.asarray(tensors[key], rows.delta[...].dtype)
      rows.delta[...] = new - rows.base.embedding[...][jnp.asarray(rows.ids)]
  if names != set(tensors):
    raise CheckpointError(f"LoRA adapter {path!r}: tensors {sorted(set(tensors) - names)[:5]} "
                          f"unused, {sorted(names - set(tensors))[:5]} missing")
  for name, m in modules.items():
    for ab, var in (("A", m.lora_a), ("B", m.lora_b)):
      var[...] = jnp.asarray(tensors[f"{PEFT_PREFIX}{name}.lora_{ab}.weight"].T, var[...].dtype)
  return model
