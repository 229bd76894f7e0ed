"""Mosaic TPU kernel: per-tile attention probability sums, two passes per query tile.

Grid ``(B, Hq, nQ, 2 * nC)``: each step brings a chunk of ``c`` key tiles (``c`` divides ``nK``,
at most 8 tiles and 1024 keys, so that per-step overhead does not dominate small tiles) and
walks its tiles in an unrolled loop. Steps ``j < nC`` (pass 1) fold the tiles into the row max
and sum held in VMEM scratch; steps ``j >= nC`` (pass 2) put each tile's probability sum into
its slot of the output row ``[1, nK]``, which stays in VMEM for the whole query block. When
causal, the key ``index_map`` clamps at the chunk holding the diagonal (no new DMA) and
``pl.when`` skips the tiles past it, whose slots stay 0. Inputs are padded ``[B, S, H, D]``;
the kernel works on ``[B, H, S, D]`` (tiles whose last two dims are ``(seq, head_dim)``).
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


def tiles_per_step(nk: int, block_k: int) -> int:
  """The largest divisor of ``nK`` that keeps a step at most 8 tiles and 1024 keys (or one)."""
  return max(c for c in range(1, 9) if nk % c == 0 and (c == 1 or c * block_k <= 1024))


def _kernel(q_ref, k_ref, *refs, spec: AttentionSpec, nk: int, per_step: int):
  if spec.segments:
    qseg_ref, kvseg_ref, o_ref, m_sc, l_sc = refs
  else:
    o_ref, m_sc, l_sc = refs
  qi, j = pl.program_id(2), pl.program_id(3)
  bq, bk = spec.block_q, spec.block_k
  chunks = nk // per_step
  steps = stream.num_key_tiles(qi, spec, nk)

  def scores(kb, t):
    """Base-2 scores and mask of key block ``kb``, tile ``t`` of this step's chunk."""
    s = lax.dot_general(q_ref[...], k_ref[pl.ds(t * bk, bk), :], (((1,), (1,)), ((), ())),
                        preferred_element_type=jnp.float32) * (spec.scale * LOG2E)
    rows = qi * bq + lax.broadcasted_iota(jnp.int32, (bq, bk), 0)
    cols = kb * bk + lax.broadcasted_iota(jnp.int32, (bq, bk), 1)
    seg = (dict(q_seg=qseg_ref[...], kv_seg=kvseg_ref[:, pl.ds(t * bk, bk)])
           if spec.segments else {})
    mask = stream.and_masks(
        tile_mask(rows, cols, causal=spec.causal, kv_len=spec.kv_len, **seg),
        rows < spec.seq_q if spec.seq_q % bq else None)
    return s, mask

  @pl.when(j == 0)
  def _init():
    m_sc[...] = jnp.full(m_sc.shape, NEG_INF, jnp.float32)
    l_sc[...] = jnp.zeros(l_sc.shape, jnp.float32)
    o_ref[...] = jnp.zeros(o_ref.shape, jnp.float32)

  for t in range(per_step):
    kb = lax.rem(j, chunks) * per_step + t

    @pl.when((j < chunks) & (kb < steps))
    def _pass1():
      m_sc[...], l_sc[...] = stream.lse_step(*scores(kb, t), m_sc[...], l_sc[...])

    @pl.when((j >= chunks) & (kb < steps))
    def _pass2():
      p = stream.probabilities(*scores(kb, t), stream.lse2(m_sc[...], l_sc[...]))
      total = jnp.sum(jnp.sum(p, axis=0, keepdims=True), axis=1, keepdims=True)  # [1, 1]
      slot = lax.broadcasted_iota(jnp.int32, o_ref.shape, 1) == kb
      o_ref[...] = jnp.where(slot, total, o_ref[...])


def tile_sums(q, k, q_seg, kv_seg, spec: AttentionSpec) -> jax.Array:
  """Padded ``q [B, Sq', Hq, D]``, ``k [B, Sk', Hkv, D]`` -> probability sums ``[B, Hq, nQ, nK]``."""
  b, sqp, hq, d = q.shape
  bq, bk = spec.block_q, spec.block_k
  nq, nk = sqp // bq, k.shape[1] // bk
  per_step = tiles_per_step(nk, bk)
  chunks, width = nk // per_step, per_step * bk
  qh, kh = jnp.swapaxes(q, 1, 2), jnp.swapaxes(k, 1, 2)

  def chunk(qi, j):  # clamped at the last visible chunk: repeated index, no new DMA
    last = lax.div(stream.num_key_tiles(qi, spec, nk) - 1, per_step)
    return jnp.minimum(lax.rem(j, chunks), last)

  in_specs = [pl.BlockSpec((None, None, bq, d), lambda bi, h, qi, j: (bi, h, qi, 0)),
              pl.BlockSpec((None, None, width, d), lambda bi, h, qi, j:
                           (bi, lax.div(h, spec.kv_group), chunk(qi, j), 0))]
  args = [qh, kh]
  if spec.segments:
    in_specs += [pl.BlockSpec((None, bq, 1), lambda bi, h, qi, j: (bi, qi, 0)),
                 pl.BlockSpec((None, 1, width), lambda bi, h, qi, j: (bi, 0, chunk(qi, j)))]
    args += [q_seg[:, :, None], kv_seg[:, None, :]]
  sums = pl.pallas_call(
      functools.partial(_kernel, spec=spec, nk=nk, per_step=per_step),
      grid=(b, hq, nq, 2 * chunks),
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
