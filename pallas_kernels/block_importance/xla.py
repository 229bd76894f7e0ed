"""XLA path: exact softmax one query block row at a time (``lax.map`` over query blocks).

Each step holds the scores of one block row, ``[B, Hkv, G, block_q, Sk']`` float32, never the
``[Sq, Sk]`` matrix: the row's log-sum-exp and its per-tile probability sums come from that row.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels.block_importance import stream
from pallas_kernels.sparse_attention.config import AttentionSpec
from pallas_kernels.sparse_attention.tile import LOG2E, tile_mask


def tile_sums(q, k, q_seg, kv_seg, spec: AttentionSpec) -> jax.Array:
  """Padded ``q [B, Sq', Hq, D]``, ``k [B, Sk', Hkv, D]`` -> probability sums ``[B, Hq, nQ, nK]``."""
  b, sqp, hq, d = q.shape
  skp, hkv = k.shape[1], k.shape[2]
  bq, bk, g = spec.block_q, spec.block_k, spec.kv_group
  nq, nk = sqp // bq, skp // bk
  blocks = jnp.moveaxis(q.reshape(b, nq, bq, hkv, g, d), 1, 0)  # [nQ, B, bq, Hkv, G, D]
  seg_blocks = jnp.moveaxis(q_seg.reshape(b, nq, bq), 1, 0) if spec.segments else None
  cols = jnp.arange(skp)[None, :]

  def row(args):
    qi, qb, qs = args
    s = jnp.einsum("bqhgd,bkhd->bhgqk", qb, k, preferred_element_type=jnp.float32)
    s = s * (spec.scale * LOG2E)
    rows = qi * bq + jnp.arange(bq)[:, None]
    seg = dict(q_seg=qs[:, None, None, :, None], kv_seg=kv_seg[:, None, None, None, :]) \
        if spec.segments else {}
    mask = stream.and_masks(
        tile_mask(rows, cols, causal=spec.causal, kv_len=spec.kv_len, **seg),
        rows < spec.seq_q if sqp != spec.seq_q else None)
    m, l = stream.lse_step(s, mask, jnp.full(s.shape[:-1] + (1,), -jnp.inf), 0.0)
    p = stream.probabilities(s, mask, stream.lse2(m, l))
    return p.reshape(*p.shape[:3], bq, nk, bk).sum(axis=(3, 5))  # [B, Hkv, G, nK]

  qs = seg_blocks if spec.segments else jnp.zeros((nq,), jnp.int32)
  sums = jax.lax.map(row, (jnp.arange(nq), blocks, qs))  # [nQ, B, Hkv, G, nK]
  return jnp.moveaxis(sums, 0, 3).reshape(b, hq, nq, nk)
