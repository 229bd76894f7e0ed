"""Adaptive width for the LLaMA decoder (AdaLLaVA head granularity), through its ``layer_gates``
hook: a gate that is a callable runs the layer itself (``jaxvlm.models.llama.modeling``).

A layer's ``G = num_key_value_heads`` units are its KV-head groups: unit ``u`` = q heads
``u Hq/G .. (u+1) Hq/G - 1``, k/v head ``u``, the matching o_proj input rows and the intermediate
(MLP) rows ``u I/G .. (u+1) I/G - 1``.

Gathered inference (a :class:`UnitGate` with an ``index``) computes only the chosen units. For
generation the cost of computing fewer units must not move into copying: the chosen units' weight
slices (:class:`CutLinear`) are cut once, in the prefill, and kept in a :class:`UnitCache`, whose
gathered layers also hold only the chosen units' k/v heads, so a decode step reads ``g / G`` of
such a layer's weights and cache and copies neither.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from jaxvlm.errors import ConfigError
from jaxvlm.layers.attention import KVCache
from jaxvlm.layers.lora import LoRALinear

IN_PROJ = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")  # output columns cut
OUT_PROJ = ("o_proj", "down_proj")  # input rows cut


def unit_blocks(w: jax.Array, index: jax.Array, groups: int, axis: int) -> jax.Array:
  """``w`` cut into ``groups`` equal consecutive blocks along ``axis``; the blocks ``index``
  concatenated in that order."""
  axis = axis % w.ndim
  split = w.shape[:axis] + (groups, w.shape[axis] // groups) + w.shape[axis + 1:]
  kept = jnp.take(w.reshape(split), index, axis=axis)
  return kept.reshape(w.shape[:axis] + (-1,) + w.shape[axis + 1:])


@flax.struct.dataclass
class CutLinear:
  """The blocks ``index`` of a ``Linear`` / ``LoRALinear`` (inference), cut once and stored in the
  compute dtype: ``axis=1`` output columns (bias and LoRA ``B`` columns alike), ``axis=0`` input
  rows (LoRA ``A`` rows alike; the bias whole). Computes what the layer computes on those blocks."""

  kernel: jax.Array
  bias: jax.Array | None
  lora_a: jax.Array | None
  lora_b: jax.Array | None
  scale: float = flax.struct.field(pytree_node=False, default=0.0)

  @classmethod
  def of(cls, lin, index: jax.Array, groups: int, axis: int) -> "CutLinear":
    base = lin.base if isinstance(lin, LoRALinear) else lin
    dt = base.dtype
    cut = lambda w, ax: unit_blocks(w[...], index, groups, ax).astype(dt)
    bias = None if base.bias is None else (cut(base.bias, 0) if axis == 1
                                           else base.bias[...].astype(dt))
    if not isinstance(lin, LoRALinear):
      return cls(cut(base.kernel, axis), bias, None, None)
    a = cut(lin.lora_a, 0) if axis == 0 else lin.lora_a[...].astype(dt)
    b = cut(lin.lora_b, 1) if axis == 1 else lin.lora_b[...].astype(dt)
    return cls(cut(base.kernel, axis), bias, a, b, lin.scale)

  def __call__(self, x: jax.Array, *, bias_scale: jax.Array | None = None) -> jax.Array:
    """``x @ kernel (+ bias x bias_scale) (+ (x @ A) @ B x scale)`` in the compute dtype."""
    x = x.astype(self.kernel.dtype)
    y = jnp.dot(x, self.kernel)
    if self.bias is not None:
      y = y + (self.bias if bias_scale is None else bias_scale.astype(y.dtype) * self.bias)
    if self.lora_a is not None:
      y = y + ((x @ self.lora_a) @ self.lora_b) * jnp.asarray(self.scale, y.dtype)
    return y


def cut_layer(layer: nnx.Module, index: jax.Array, groups: int) -> dict[str, CutLinear]:
  """Every projection of a decoder layer cut to the units ``index`` (of ``groups``)."""
  mods = {**{n: getattr(layer.self_attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj")},
          **{n: getattr(layer.mlp, n) for n in ("gate_proj", "up_proj", "down_proj")}}
  return {n: CutLinear.of(m, index, groups, 1 if n in IN_PROJ else 0) for n, m in mods.items()}


@flax.struct.dataclass
class UnitCache(KVCache):
  """A :class:`KVCache` whose gathered layers hold only the computed units' k/v heads, with those
  layers' weight slices ``slices[i]`` (a :func:`cut_layer` dict; None for the other layers), cut
  by the prefill and read by every decode step."""

  slices: tuple[dict[str, CutLinear] | None, ...] = ()


def unit_cache(kv: KVCache, layers, gathered: range, per_layer: int) -> UnitCache:
  """An empty cache like ``kv`` (before a prefill) whose layers ``gathered`` keep ``per_layer``
  k/v heads, with zero weight slices of that width to be filled by the prefill."""
  groups = kv.k[0].shape[2]
  narrow = lambda t: jnp.zeros(t.shape[:2] + (per_layer,) + t.shape[3:], t.dtype)
  k = tuple(narrow(t) if i in gathered else t for i, t in enumerate(kv.k))
  v = tuple(narrow(t) if i in gathered else t for i, t in enumerate(kv.v))
  index = jnp.arange(per_layer, dtype=jnp.int32)
  zeros = lambda layer: jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype),
                                     cut_layer(layer, index, groups))  # shapes only
  slices = tuple(zeros(layer) if i in gathered else None for i, layer in enumerate(layers))
  return UnitCache(k=k, v=v, key_valid=kv.key_valid, index=kv.index, late_valid=kv.late_valid,
                   write_slots=kv.write_slots, late_from=kv.late_from, slices=slices)


@flax.struct.dataclass
class UnitGate:
  """Per-unit gates of one layer (adaptive width), passed as its ``layer_gates`` value.

  ``weights [B, G]``: each unit's per-row weight; a unit's attention-head outputs and MLP
  activations are multiplied by it (straight-through ``{0, 1}`` gates in training). ``index [g]``
  (int, or None = all ``G``): the only units computed: their weight slices are cut, so the
  matmuls are ``g / G`` as wide, and with a cache the layer's cache must hold just their ``g``
  k/v heads (:class:`UnitCache`). ``cuts``: the slices already cut (a decode step reads them from
  the cache); ``store``: write the cut slices into the :class:`UnitCache` (the prefill);
  ``layer``: the layer's index (its cache entry; None = the layer's own ``layer_idx``). The
  output-projection biases are added for rows with some non-zero weight.
  """

  weights: jax.Array
  index: jax.Array | None = None
  cuts: dict[str, CutLinear] | None = None
  store: bool = flax.struct.field(pytree_node=False, default=False)
  layer: int | None = flax.struct.field(pytree_node=False, default=None)

  @property
  def groups(self) -> int:
    return self.weights.shape[-1]

  @property
  def count(self) -> int:
    return self.groups if self.index is None else self.index.shape[0]

  def computed(self) -> jax.Array:
    """Weights ``[B, g]`` of the computed units."""
    return self.weights if self.index is None else jnp.take(self.weights, self.index, axis=1)

  def expand(self, width: int) -> jax.Array:
    """``[B, g * width]``: each computed unit's weight repeated over its ``width`` features."""
    return jnp.repeat(self.computed(), width, axis=1)

  def active(self) -> jax.Array:
    """``[B]`` True for rows with some non-zero weight."""
    return jnp.any(self.computed() != 0, axis=1)

  def __call__(self, layer, x, cos, sin, mask, cache, *, attention_fn=None, skip: bool = False):
    """Runs ``layer`` on the units (the decoder's hook); returns ``(x, cache)``. With ``skip`` the
    layer runs under ``lax.cond`` only when some row has a non-zero weight (a layer no row selected
    costs nothing). With a cache the cond only reads it: the layer attends to the cache and its new
    keys / values apart (:func:`split_attention`) and returns those, which are written after the
    cond (zeros for a skipped layer, whose cache no later step of the plan reads), so no cache
    layer is copied in or out of the cond."""
    i = layer.self_attn.layer_idx if self.layer is None else self.layer
    slices = cache.slices if isinstance(cache, UnitCache) else ()
    if self.store and not (slices and slices[i] is not None):
      raise ConfigError("cache", type(cache).__name__, f"a UnitCache with weight slices for "
                        f"layer {i} (unit_cache) to store the cut units in")
    if cache is not None and attention_fn is not None:
      raise ConfigError("attention_fn", attention_fn, "None when a unit-gated layer has a cache")
    inner = cache.replace(slices=()) if slices else cache  # the slices stay out of the cond

    def run(x, cache, slot):
      cuts = self.cuts
      if cuts is None and self.index is not None:
        cuts = cut_layer(layer, self.index, self.groups)
      new_kv = None if cache is None else []
      core = attention_fn if cache is None else split_attention(cache.index)
      y, _, _ = layer(x, cos, sin, mask, cache, attention_fn=core,
                      units=LayerUnits(self, cuts, new_kv))
      kv = () if cache is None else tuple(t.astype(cache.k[i].dtype) for t in new_kv)
      return y, kv, cuts if self.store else slot

    def skipped(x, cache, slot):
      if cache is None:
        return x, (), slot
      shape = x.shape[:2] + cache.k[i].shape[2:]  # the cache layer holds the computed heads
      return x, (jnp.zeros(shape, cache.k[i].dtype), jnp.zeros(shape, cache.v[i].dtype)), slot

    slot = slices[i] if self.store else None
    if skip:
      x, kv, slot = jax.lax.cond(jnp.any(self.active()), run, skipped, x, inner, slot)
    else:
      x, kv, slot = run(x, inner, slot)
    if cache is None:
      return x, None
    inner = inner.update_layer(i, *kv)[0]
    if slices:
      inner = inner.replace(slices=slices[:i] + (slot,) + slices[i + 1:] if self.store
                            else slices)
    return x, inner


def split_attention(index):
  """An attention core for a layer whose new keys / values are not yet in its cache: ``k`` and
  ``v`` are ``(cache layer [B, M, h, D], new [B, S, h, D])``, the new ones belonging at slots
  ``index .. index + S - 1`` of ``mask [B|1, 1, S, M]``. One float32 softmax over both parts, as
  :func:`jaxvlm.layers.attention.attention` computes it over the written cache."""
  def core(q, k, v, mask, layer):
    (k_old, k_new), (v_old, v_new) = k, v
    b, s, hq, d = q.shape
    h, m = k_new.shape[2], k_old.shape[1]
    qg = q.reshape(b, s, h, hq // h, d)
    mask = jnp.broadcast_to(mask, (b, 1, s, m))
    slots = jnp.arange(m)
    fresh = (slots >= index) & (slots < index + s)
    parts = ((k_old, v_old, mask & ~fresh),
             (k_new, v_new, jax.lax.dynamic_slice_in_dim(mask, index, s, axis=3)))
    scores = [jnp.where(keep[:, :, None], jnp.einsum(
        "bqhgd,bkhd->bhgqk", qg, kk, preferred_element_type=jnp.float32) * d ** -0.5,
        jnp.finfo(jnp.float32).min) for kk, _, keep in parts]
    top = jnp.maximum(*(sc.max(-1, keepdims=True) for sc in scores))
    exps = [jnp.exp(sc - top) for sc in scores]
    total = sum(e.sum(-1, keepdims=True) for e in exps)
    out = sum(jnp.einsum("bhgqk,bkhd->bqhgd", (e / total).astype(vv.dtype), vv)
              for e, (_, vv, _) in zip(exps, parts))
    return out.reshape(b, s, hq, d)

  return core


@dataclasses.dataclass(frozen=True)
class LayerUnits:
  """What the decoder's attention / MLP call for a unit-gated layer (trace-time helper):
  projections restricted to the computed units (``cuts``; None = every unit, masked)."""

  gate: UnitGate
  cuts: dict[str, CutLinear] | None
  new_kv: list | None = None  # collects the new keys / values instead of writing the cache

  def project(self, name: str, lin, x: jax.Array) -> jax.Array:
    """``lin(x)`` on the computed units' output columns."""
    return lin(x) if self.cuts is None else self.cuts[name](x)

  def output(self, name: str, lin, h: jax.Array) -> jax.Array:
    """``h [B, S, g w]`` (the computed units' features) weighted per unit and row, through
    ``lin``'s matching input rows; its bias added for rows with some non-zero weight."""
    h = h * self.gate.expand(h.shape[-1] // self.gate.count)[:, None].astype(h.dtype)
    scale = self.gate.active()[:, None, None]
    if self.cuts is None:
      return lin(h, bias_scale=scale)
    return self.cuts[name](h, bias_scale=scale)

  def update_cache(self, cache: KVCache, layer: int, k: jax.Array, v: jax.Array
                   ) -> tuple[KVCache, Any, Any]:
    """The computed units' ``k, v [B, S, g, D]`` for attention: written into the cache, or with
    ``new_kv`` collected there and returned next to the unchanged cache layer (for
    :func:`split_attention`). The layer's cache must hold exactly those heads (a
    :class:`UnitCache` for a gathered layer)."""
    held = cache.k[layer].shape[2]
    if held != k.shape[2]:
      raise ConfigError("cache", f"layer {layer} with {held} k/v heads",
                        f"{k.shape[2]} heads, those of the computed units (unit_cache)")
    if self.new_kv is None:
      return cache.update_layer(layer, k, v)
    self.new_kv.extend((k, v))
    return cache, (cache.k[layer], k), (cache.v[layer], v)
