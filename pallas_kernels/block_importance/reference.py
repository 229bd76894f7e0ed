"""Dense tile importance: the formula that defines what every ``block_importance`` backend computes.

Tile ``(i, j)`` of query head ``h`` gets the mean attention probability over its entries: the
softmax (float32, over the allowed keys of each query row) summed over the rows of query block
``i`` and the columns of key block ``j``, divided by the tile's area inside the unpadded sequence
(``rows_i * cols_j``, masked entries counting as probability 0). Allowed: ``i >= j`` when
``causal`` (top-left aligned) and equal segment ids when given (how padding is expressed); a
query with no allowed key has no probability mass. ``per_kv_head`` averages the query heads of
each GQA group (query head ``h`` uses KV head ``h // (Hq // Hkv)``). It holds the full
``[B, Hq, Sq, Sk]`` probability matrix: a test oracle, not for long sequences.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def allowed(rows: jax.Array, cols: jax.Array, *, causal: bool, q_segment_ids=None,
            kv_segment_ids=None) -> jax.Array | None:
  """Bool mask broadcastable to ``[B, 1, rows, cols]`` from absolute positions, or None."""
  mask = None
  if causal:
    mask = rows[:, None] >= cols[None, :]
  if q_segment_ids is not None:
    seg = (q_segment_ids[:, :, None] == kv_segment_ids[:, None, :])[:, None]
    mask = seg if mask is None else mask & seg
  return mask


def tile_means(tile_sums: jax.Array, seq_q: int, seq_k: int, block_q: int, block_k: int,
               num_kv_heads: int, per_kv_head: bool) -> jax.Array:
  """Per-tile probability sums ``[B, Hq, nQ, nK]`` -> tile means, GQA-averaged if asked."""
  b, hq, nq, nk = tile_sums.shape
  rows = jnp.minimum(block_q, seq_q - jnp.arange(nq) * block_q)
  cols = jnp.minimum(block_k, seq_k - jnp.arange(nk) * block_k)
  means = tile_sums / (rows[:, None] * cols[None, :]).astype(jnp.float32)
  if per_kv_head:
    means = means.reshape(b, num_kv_heads, hq // num_kv_heads, nq, nk).mean(axis=2)
  return means


def block_importance_reference(q: jax.Array, k: jax.Array, block_q: int, block_k: int, *,
                               per_kv_head: bool = True, causal: bool = False,
                               sm_scale: float | None = None,
                               q_segment_ids: jax.Array | None = None,
                               kv_segment_ids: jax.Array | None = None) -> jax.Array:
  """``q [B, Sq, Hq, D]``, ``k [B, Sk, Hkv, D]`` -> float32 ``[B, Hkv | Hq, nQ, nK]``."""
  b, sq, hq, d = q.shape
  sk, hkv = k.shape[1], k.shape[2]
  scale = d ** -0.5 if sm_scale is None else sm_scale
  kr = jnp.repeat(k, hq // hkv, axis=2)
  s = jnp.einsum("bqhd,bkhd->bhqk", q, kr, preferred_element_type=jnp.float32) * scale
  mask = allowed(jnp.arange(sq), jnp.arange(sk), causal=causal, q_segment_ids=q_segment_ids,
                 kv_segment_ids=kv_segment_ids)
  p = jax.nn.softmax(s, axis=-1, where=mask)
  if mask is not None:  # softmax leaves rows without an allowed key undefined: no mass there
    p = jnp.where(mask & jnp.any(mask, axis=-1, keepdims=True), p, 0.0)
  nq, nk = math.ceil(sq / block_q), math.ceil(sk / block_k)
  p = jnp.pad(p, ((0, 0), (0, 0), (0, nq * block_q - sq), (0, nk * block_k - sk)))
  sums = p.reshape(b, hq, nq, block_q, nk, block_k).sum(axis=(3, 5))
  return tile_means(sums, sq, sk, block_q, block_k, hkv, per_kv_head)
