"""Mosaic TPU forward kernel: splash-style block-sparse flash attention.

Grid ``(B, Hq, nQ, maxK)``. The selection is scalar-prefetched into SMEM and drives the K/V
``index_map``: step ``j`` of query block ``i`` fetches key block ``kv_block_indices[.., i, j]``.
Steps past ``kv_block_counts`` repeat the last index, so the pipeline issues no new DMA, and
``pl.when`` skips their compute. Inputs are padded ``[B, S, H, D]``; the kernel works on
``[B, H, S, D]`` (a head-major layout keeps the tiles' last two dims ``(seq, head_dim)``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels.sparse_attention import tile
from pallas_kernels.sparse_attention.config import AttentionSpec


def _dot_qk(q, k):
  return lax.dot_general(q, k, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)


def _dot_pv(p, v):
  return lax.dot_general(p, v, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)


def _kernel(idx_ref, cnt_ref, q_ref, k_ref, v_ref, *refs, spec: AttentionSpec):
  if spec.segments:
    qseg_ref, kvseg_ref, o_ref, lse_ref, m_sc, l_sc, acc_sc = refs
  else:
    o_ref, lse_ref, m_sc, l_sc, acc_sc = refs
  b, h, qi, j = (pl.program_id(a) for a in range(4))
  bs = b if spec.sel_batch > 1 else 0
  hs = lax.div(h, spec.sel_group)

  @pl.when(j == 0)
  def _init():
    m_sc[...] = jnp.full(m_sc.shape, tile.NEG_INF, jnp.float32)
    l_sc[...] = jnp.zeros(l_sc.shape, jnp.float32)
    acc_sc[...] = jnp.zeros(acc_sc.shape, jnp.float32)

  @pl.when(j < cnt_ref[bs, hs, qi])
  def _step():
    kv_block = idx_ref[bs, hs, qi, j]
    shape = (spec.block_q, spec.block_k)
    rows = qi * spec.block_q + lax.broadcasted_iota(jnp.int32, shape, 0)
    cols = kv_block * spec.block_k + lax.broadcasted_iota(jnp.int32, shape, 1)
    seg = dict(q_seg=qseg_ref[...], kv_seg=kvseg_ref[...]) if spec.segments else {}
    mask = tile.tile_mask(rows, cols, causal=spec.causal, kv_len=spec.kv_len, **seg)
    m, l, acc = tile.online_softmax_step(
        q_ref[...], k_ref[...], v_ref[...], m_sc[...], l_sc[...], acc_sc[...],
        scale=spec.scale, mask=mask, dot_qk=_dot_qk, dot_pv=_dot_pv)
    m_sc[...], l_sc[...], acc_sc[...] = m, l, acc

  @pl.when(j == pl.num_programs(3) - 1)
  def _finish():
    out, lse = tile.finalize(m_sc[...], l_sc[...], acc_sc[...])
    o_ref[...] = out.astype(o_ref.dtype)
    lse_ref[...] = lse


def forward(q, k, v, indices, counts, q_seg, kv_seg, spec: AttentionSpec):
  """Padded ``q [B, Sq', Hq, D]``, ``k, v [B, Sk', Hkv, D]`` -> ``(out, lse [B, Hq, Sq'])``."""
  b, sqp, hq, d = q.shape
  bq, bk = spec.block_q, spec.block_k
  max_k = indices.shape[-1]
  qh, kh, vh = (jnp.swapaxes(x, 1, 2) for x in (q, k, v))

  def sel(bi):
    return bi if spec.sel_batch > 1 else 0

  def q_map(bi, h, qi, j, idx, cnt):
    return bi, h, qi, 0

  def kv_map(bi, h, qi, j, idx, cnt):
    return bi, lax.div(h, spec.kv_group), idx[sel(bi), lax.div(h, spec.sel_group), qi, j], 0

  in_specs = [pl.BlockSpec((None, None, bq, d), q_map),
              pl.BlockSpec((None, None, bk, d), kv_map),
              pl.BlockSpec((None, None, bk, d), kv_map)]
  args = [qh, kh, vh]
  if spec.segments:
    in_specs += [
        pl.BlockSpec((None, bq, 1), lambda bi, h, qi, j, idx, cnt: (bi, qi, 0)),
        pl.BlockSpec((None, 1, bk), lambda bi, h, qi, j, idx, cnt:
                     (bi, 0, idx[sel(bi), lax.div(h, spec.sel_group), qi, j])),
    ]
    args += [q_seg[:, :, None], kv_seg[:, None, :]]
  grid_spec = pltpu.PrefetchScalarGridSpec(
      num_scalar_prefetch=2,
      grid=(b, hq, sqp // bq, max_k),
      in_specs=in_specs,
      out_specs=[pl.BlockSpec((None, None, bq, d), q_map),
                 pl.BlockSpec((None, None, bq, 1), q_map)],
      scratch_shapes=[pltpu.VMEM((bq, 1), jnp.float32), pltpu.VMEM((bq, 1), jnp.float32),
                      pltpu.VMEM((bq, d), jnp.float32)],
  )
  out, lse = pl.pallas_call(
      functools.partial(_kernel, spec=spec),
      grid_spec=grid_spec,
      out_shape=[jax.ShapeDtypeStruct((b, hq, sqp, d), q.dtype),
                 jax.ShapeDtypeStruct((b, hq, sqp, 1), jnp.float32)],
      compiler_params=pltpu.CompilerParams(
          dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")),
      interpret=spec.interpret,
      name="sparse_attention_fwd",
  )(indices, counts, *args)
  return jnp.swapaxes(out, 1, 2), lse[..., 0]
