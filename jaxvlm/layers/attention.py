"""Attention core, masks and the KV cache.

``attention(q, k, v, mask, implementation=...)`` takes ``q [B, Sq, Hq, D]`` and
``k, v [B, Sk, Hkv, D]`` (grouped-query: ``Hq % Hkv == 0``) and a boolean ``mask`` broadcastable to
``[B, Hq, Sq, Sk]`` (True = may attend). ``implementation``:

* ``"xla"``: explicit einsum + float32 softmax; the only one that can return probabilities.
* ``"cudnn"``: ``jax.nn.dot_product_attention(implementation="cudnn")`` (GPU, bf16/fp16).
* ``"auto"``: ``jax.nn.dot_product_attention`` with XLA's own choice.
* ``"pallas"``: ``pallas_kernels.sparse_attention`` with every key block selected (the Pallas
  flash kernel of the platform: Mosaic TPU; on GPU Mosaic GPU (Hopper, bf16/fp16) or Triton).

``causal`` applies when ``mask`` is None. ``pallas`` serves unpadded full-sequence calls
(``mask`` None); with an explicit mask (padding, KV cache, sliding window) it takes the ``xla``
path, as do single-query decode steps and calls that return probabilities.

Rows whose keys are all masked (left padding) get a uniform distribution over their (masked)
keys, as in ``transformers``; their outputs are never used.
"""

from __future__ import annotations

from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp

from jaxvlm.errors import ConfigError

IMPLEMENTATIONS = ("xla", "cudnn", "auto", "pallas")
PALLAS_BLOCK = 128

# attention_fn(q, k, v, mask, layer_idx) -> out: replaces the core (sparse attention, methods).
AttentionFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array | None, int], jax.Array]


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, *,
              implementation: str = "xla", scale: float | None = None, causal: bool = False,
              return_probs: bool = False) -> tuple[jax.Array, jax.Array | None]:
  """Scaled dot-product attention; returns (out ``[B, Sq, Hq, D]``, probs ``[B, Hq, Sq, Sk]``|None)."""
  b, sq, hq, d = q.shape
  hkv = k.shape[2]
  if hq % hkv:
    raise ConfigError("num_key_value_heads", hkv, f"a divisor of num_attention_heads={hq}")
  scale = d ** -0.5 if scale is None else scale
  if implementation not in IMPLEMENTATIONS:
    raise ConfigError("attention_impl", implementation, f"one of {IMPLEMENTATIONS}")
  fused = implementation != "xla" and not return_probs and sq > 1
  if fused and implementation == "pallas" and mask is None:
    return _pallas_dense(q, k, v, scale, causal=causal), None
  if fused and implementation != "pallas":
    impl = "cudnn" if implementation == "cudnn" else None
    if mask is None:
      out = jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=causal,
                                         implementation=impl)
    else:
      mask = jnp.broadcast_to(mask, (b, mask.shape[1], sq, k.shape[1]))
      if impl == "cudnn":  # cuDNN's masked (bias) backward needs even query and key lengths
        q, k, v, mask = pad_even(q, k, v, mask)
      out = jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale,
                                         implementation=impl)[:, :sq]
    return out, None
  if mask is None and causal:
    mask = make_mask(jnp.arange(sq), jnp.arange(k.shape[1]), None, causal=True)
  g = hq // hkv
  qg = q.reshape(b, sq, hkv, g, d)
  scores = jnp.einsum("bqhgd,bkhd->bhgqk", qg, k, preferred_element_type=jnp.float32) * scale
  if mask is not None:
    m = jnp.broadcast_to(mask, (b, mask.shape[1], sq, k.shape[1]))
    m = m.reshape(b, hkv, g, sq, k.shape[1]) if m.shape[1] == hq else m[:, :, None]
    scores = jnp.where(m, scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1)
  out = jnp.einsum("bhgqk,bkhd->bqhgd", probs.astype(v.dtype), v).reshape(b, sq, hq, d)
  return out, (probs.reshape(b, hq, sq, k.shape[1]) if return_probs else None)


def pad_even(q, k, v, mask):
  """Pads odd query / key lengths by one: a padded key is masked for every query, a padded query
  repeats the last query's row (its output is dropped), so the real rows' attention is unchanged."""
  pq, pk = q.shape[1] % 2, k.shape[1] % 2
  seq = lambda x, n: jnp.pad(x, [(0, 0), (0, n)] + [(0, 0)] * (x.ndim - 2))
  mask = jnp.pad(mask, [(0, 0), (0, 0), (0, 0), (0, pk)])  # False: padded keys never attended
  mask = jnp.pad(mask, [(0, 0), (0, 0), (0, pq), (0, 0)], mode="edge")
  return seq(q, pq), seq(k, pk), seq(v, pk), mask


def _pallas_dense(q, k, v, scale, *, causal: bool) -> jax.Array:
  """Dense attention through the block-sparse Pallas kernel with every key block selected."""
  import pallas_kernels
  sel = pallas_kernels.dense_selection(k.shape[2], q.shape[1], k.shape[1], PALLAS_BLOCK,
                                       PALLAS_BLOCK)
  return pallas_kernels.sparse_attention(q, k, v, sel, causal=causal, sm_scale=scale)


def make_mask(query_slots: jax.Array, key_slots: jax.Array, key_valid: jax.Array | None, *,
              causal: bool, sliding_window: int | None = None) -> jax.Array:
  """Boolean mask ``[B, 1, Sq, Sk]`` from slot indices (``[Sq]`` or per row ``[B, Sq]``; ``[Sk]``)
  and key validity ``[B, Sk]``."""
  diff = query_slots[..., :, None] - key_slots[None, :]
  allowed = jnp.ones(diff.shape, bool)
  if causal:
    allowed &= diff >= 0
  if sliding_window is not None:
    allowed &= diff < sliding_window
  mask = allowed[:, None] if allowed.ndim == 3 else allowed[None, None]
  if key_valid is not None:
    mask = mask & key_valid[:, None, None, :].astype(bool)
  return mask


@flax.struct.dataclass
class KVCache:
  """Preallocated per-layer keys/values ``[B, S_max, Hkv, D]``.

  ``key_valid [B, S_max]`` marks slots holding real (non-pad) tokens; ``index`` is the next slot.
  After a prefill that dropped tokens from layer ``late_from`` on (SGL layer pruning,
  :meth:`start_pruning`), layers ``>= late_from`` use ``late_valid`` instead (the dropped slots
  masked); while that prefill runs, ``write_slots [B, S']`` (prompt-relative slots of the kept
  tokens, -1 = pad) scatters those layers' shortened keys/values to the kept tokens' own slots.
  """

  k: tuple[jax.Array, ...]
  v: tuple[jax.Array, ...]
  key_valid: jax.Array
  index: jax.Array
  late_valid: jax.Array | None = None
  write_slots: jax.Array | None = None
  late_from: int = flax.struct.field(pytree_node=False, default=0)

  @classmethod
  def init(cls, num_layers: int, batch: int, max_len: int, num_kv_heads: int, head_dim: int,
           dtype=jnp.float32) -> "KVCache":
    zeros = lambda: jnp.zeros((batch, max_len, num_kv_heads, head_dim), dtype)
    return cls(k=tuple(zeros() for _ in range(num_layers)),
               v=tuple(zeros() for _ in range(num_layers)),
               key_valid=jnp.zeros((batch, max_len), bool), index=jnp.zeros((), jnp.int32))

  @property
  def max_len(self) -> int:
    return self.key_valid.shape[1]

  def with_new_tokens(self, valid: jax.Array) -> "KVCache":
    """Marks the next ``valid.shape[1]`` slots with validity ``valid [B, S]`` (before the layers run)."""
    put = lambda m: jax.lax.dynamic_update_slice(m, valid.astype(bool), (0, self.index))
    return self.replace(key_valid=put(self.key_valid),
                        late_valid=None if self.late_valid is None else put(self.late_valid))

  def valid_for(self, layer: int) -> jax.Array:
    """Key validity seen by ``layer``."""
    return self.late_valid if self.late_valid is not None and layer >= self.late_from \
        else self.key_valid

  def start_pruning(self, layer: int, kept_index: jax.Array, length: int) -> "KVCache":
    """Before ``layer`` of a prefill of ``length`` tokens (already in ``key_valid``): from ``layer``
    on only the prompt slots ``kept_index [B, S']`` (increasing, -1 = pad) stay valid."""
    rows = jnp.arange(kept_index.shape[0])[:, None]
    slots = jnp.arange(self.max_len)
    in_prompt = (slots >= self.index) & (slots < self.index + length)
    base = self.key_valid if self.late_valid is None else self.late_valid
    late = jnp.where(in_prompt[None], False, base)
    kept = jnp.where(kept_index >= 0, self.index + kept_index, self.max_len)
    late = late.at[rows, kept].set(jnp.take_along_axis(self.key_valid, jnp.minimum(
        kept, self.max_len - 1), 1), mode="drop")
    return self.replace(late_valid=late, write_slots=kept_index, late_from=layer)

  def update_layer(self, layer: int, k: jax.Array, v: jax.Array) -> tuple["KVCache", jax.Array, jax.Array]:
    """Writes ``k, v [B, S, Hkv, D]`` at ``index`` for ``layer``; returns full-length k, v."""
    if self.write_slots is not None and layer >= self.late_from:
      rows = jnp.arange(k.shape[0])[:, None]
      slot = jnp.where(self.write_slots >= 0, self.index + self.write_slots, self.max_len)
      put = lambda c, x: c.at[rows, slot].set(x.astype(c.dtype), mode="drop")
      k_all, v_all = put(self.k[layer], k), put(self.v[layer], v)
    else:
      start = (0, self.index, 0, 0)
      k_all = jax.lax.dynamic_update_slice(self.k[layer], k.astype(self.k[layer].dtype), start)
      v_all = jax.lax.dynamic_update_slice(self.v[layer], v.astype(self.v[layer].dtype), start)
    ks = self.k[:layer] + (k_all,) + self.k[layer + 1:]
    vs = self.v[:layer] + (v_all,) + self.v[layer + 1:]
    return self.replace(k=ks, v=vs), k_all, v_all

  def advance(self, n: int) -> "KVCache":
    return self.replace(index=self.index + n, write_slots=None)
