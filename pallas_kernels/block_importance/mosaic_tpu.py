"""Mosaic TPU kernel: per-tile attention probability sums, two passes per query tile.

Grid ``(B, Hq, nQ, 2 * nK)``: steps ``j < nK`` (pass 1) fold key block ``j`` into the row max
and sum held in VMEM scratch; steps ``j >= nK`` (pass 2) add block ``j - nK``'s probability sum
into slot ``j - nK`` of the output row ``[1, nK]``, which stays in VMEM for the whole query
block. When causal, the key ``index_map`` clamps at the diagonal block (no new DMA) and
``pl.when`` skips the steps past it, whose slots stay 0. Inputs are padded ``[B, S, H, D]``; the
kernel works on ``[B, H, S, D]`` (tiles whose last two dims are ``(seq, head_dim)``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels.block_importance import stream
from pallas_kernels.sparse_attention.config import AttentionSpec
from pallas_kernels.sparse_attention.tile import LOG2E, NEG_INF, tile_mask


def _kernel(q_ref, k_ref, *refs, spec: AttentionSpec, nk: int):
  if spec.segments:
    qseg_ref, kvseg_ref, o_ref, m_sc, l_sc = refs
  else:
    o_ref, m_sc, l_sc = refs
  qi, j = pl.program_id(2), pl.program_id(3)
  kb = lax.rem(j, nk)
  steps = stream.num_key_tiles(qi, spec, nk)

  def scores():
    s = lax.dot_general(q_ref[...], k_ref[...], (((1,), (1,)), ((), ())),
                        preferred_element_type=jnp.float32) * (spec.scale * LOG2E)
    shape = (spec.block_q, spec.block_k)
    rows = qi * spec.block_q + lax.broadcasted_iota(jnp.int32, shape, 0)
    cols = kb * spec.block_k + lax.broadcasted_iota(jnp.int32, shape, 1)
    seg = dict(q_seg=qseg_ref[...], kv_seg=kvseg_ref[...]) if spec.segments else {}
    mask = stream.and_masks(
        tile_mask(rows, cols, causal=spec.causal, kv_len=spec.kv_len, **seg),
        rows < spec.seq_q if spec.seq_q % spec.block_q else None)
    return s, mask

  @pl.when(j == 0)
  def _init():
    m_sc[...] = jnp.full(m_sc.shape, NEG_INF, jnp.float32)
    l_sc[...] = jnp.zeros(l_sc.shape, jnp.float32)
    o_ref[...] = jnp.zeros(o_ref.shape, jnp.float32)

  @pl.when((j < nk) & (kb < steps))
  def _pass1():
    m_sc[...], l_sc[...] = stream.lse_step(*scores(), m_sc[...], l_sc[...])

  @pl.when((j >= nk) & (kb < steps))
  def _pass2():
    p = stream.probabilities(*scores(), stream.lse2(m_sc[...], l_sc[...]))
    total = jnp.sum(jnp.sum(p, axis=0, keepdims=True), axis=1, keepdims=True)  # [1, 1]
    slot = lax.broadcasted_iota(jnp.int32, o_ref.shape, 1) == kb
    o_ref[...] = jnp.where(slot, total, o_ref[...])


def tile_sums(q, k, q_seg, kv_seg, spec: AttentionSpec) -> jax.Array:
  """Padded ``q [B, Sq', Hq, D]``, ``k [B, Sk', Hkv, D]`` -> probability sums ``[B, Hq, nQ, nK]``."""
  b, sqp, hq, d = q.shape
  bq, bk = spec.block_q, spec.block_k
  nq, nk = sqp // bq, k.shape[1] // bk
  qh, kh = jnp.swapaxes(q, 1, 2), jnp.swapaxes(k, 1, 2)

  def key_block(qi, j):  # clamped at the last visible block: repeated index, no new DMA
    return jnp.minimum(lax.rem(j, nk), stream.num_key_tiles(qi, spec, nk) - 1)

  in_specs = [pl.BlockSpec((None, None, bq, d), lambda bi, h, qi, j: (bi, h, qi, 0)),
              pl.BlockSpec((None, None, bk, d), lambda bi, h, qi, j:
                           (bi, lax.div(h, spec.kv_group), key_block(qi, j), 0))]
  args = [qh, kh]
  if spec.segments:
    in_specs += [pl.BlockSpec((None, bq, 1), lambda bi, h, qi, j: (bi, qi, 0)),
                 pl.BlockSpec((None, 1, bk), lambda bi, h, qi, j: (bi, 0, key_block(qi, j)))]
    args += [q_seg[:, :, None], kv_seg[:, None, :]]
  sums = pl.pallas_call(
      functools.partial(_kernel, spec=spec, nk=nk),
      grid=(b, hq, nq, 2 * nk),
      in_specs=in_specs,
      out_specs=pl.BlockSpec((None, None, None, 1, nk), lambda bi, h, qi, j: (bi, h, qi, 0, 0)),
      out_shape=jax.ShapeDtypeStruct((b, hq, nq, 1, nk), jnp.float32),
      scratch_shapes=[pltpu.VMEM((bq, 1), jnp.float32), pltpu.VMEM((bq, 1), jnp.float32)],
      compiler_params=pltpu.CompilerParams(
          dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")),
      interpret=spec.interpret,
      name="block_importance",
  )(*args)
  return sums[:, :, :, 0]
