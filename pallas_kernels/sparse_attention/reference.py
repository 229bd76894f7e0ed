"""Pure-JAX block-sparse attention: defines what every kernel computes.

Query ``i`` of head ``h`` attends key ``j`` iff key block ``j // block_k`` is selected for
query block ``i // block_q`` (selection head ``h // (Hq // Hs)``), and, when given, ``i >= j``
(``causal``, top-left aligned) and ``q_segment_ids[i] == kv_segment_ids[j]``. Softmax runs over
the allowed keys in float32; a query with no allowed key outputs 0 (log-sum-exp ``-inf``).
Padding: give pad tokens a segment id that no real token has.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels.sparse_attention.selection import BlockSelection


def token_mask(selection: BlockSelection, batch: int, num_heads: int, seq_q: int, seq_k: int, *,
               causal: bool = False, q_segment_ids: jax.Array | None = None,
               kv_segment_ids: jax.Array | None = None) -> jax.Array:
  """Bool ``[B, Hq, Sq, Sk]``: which (query, key) pairs are allowed."""
  bq, bk = selection.block_q, selection.block_k
  nk = -(-seq_k // bk)
  blocks = selection.block_mask(nk)  # [Bs, Hs, nQ, nK]
  blocks = jnp.repeat(blocks, num_heads // blocks.shape[1], axis=1)
  mask = jnp.repeat(jnp.repeat(blocks, bq, axis=2), bk, axis=3)[:, :, :seq_q, :seq_k]
  mask = jnp.broadcast_to(mask, (batch, num_heads, seq_q, seq_k))
  if causal:
    mask &= jnp.arange(seq_q)[:, None] >= jnp.arange(seq_k)[None, :]
  if q_segment_ids is not None:
    mask &= (q_segment_ids[:, :, None] == kv_segment_ids[:, None, :])[:, None]
  return mask


def sparse_attention_reference(q: jax.Array, k: jax.Array, v: jax.Array,
                               selection: BlockSelection, *, causal: bool = False,
                               q_segment_ids: jax.Array | None = None,
                               kv_segment_ids: jax.Array | None = None,
                               sm_scale: float | None = None,
                               return_lse: bool = False):
  """``q [B, Sq, Hq, D]``, ``k, v [B, Sk, Hkv, D]`` -> ``out [B, Sq, Hq, D]`` (q's dtype).

  With ``return_lse`` also the float32 log-sum-exp ``[B, Hq, Sq]`` of the scaled scores.
  """
  b, sq, hq, d = q.shape
  sk, hkv = k.shape[1], k.shape[2]
  scale = d ** -0.5 if sm_scale is None else sm_scale
  mask = token_mask(selection, b, hq, sq, sk, causal=causal, q_segment_ids=q_segment_ids,
                    kv_segment_ids=kv_segment_ids)
  kr, vr = (jnp.repeat(x, hq // hkv, axis=2) for x in (k, v))
  s = jnp.einsum("bqhd,bkhd->bhqk", q, kr, preferred_element_type=jnp.float32) * scale
  s = jnp.where(mask, s, -jnp.inf)
  m = jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))
  m = jnp.where(jnp.isfinite(m), m, 0.0)
  p = jnp.where(mask, jnp.exp(s - m), 0.0)
  l = jnp.sum(p, axis=-1, keepdims=True)
  out = jnp.einsum("bhqk,bkhd->bqhd", p / jnp.where(l == 0, 1.0, l), vr.astype(jnp.float32))
  out = out.astype(q.dtype)
  if not return_lse:
    return out
  lse = jnp.where(l[..., 0] == 0, -jnp.inf, m[..., 0] + jnp.log(l[..., 0]))
  return out, lse
