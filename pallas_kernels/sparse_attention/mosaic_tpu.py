"""Mosaic TPU kernels: splash-style block-sparse flash attention, forward and backward.

Grid ``(B, Hq, nQ, maxK)``. The selection is scalar-prefetched into SMEM and drives the K/V
``index_map``: step ``j`` of query block ``i`` fetches key block ``kv_block_indices[.., i, j]``.
Steps past ``kv_block_counts`` repeat the last index, so the pipeline issues no new DMA, and
``pl.when`` skips their compute. The backward's dQ kernel walks the same selection; its dK/dV
kernel walks the transposed one (grid ``(B, Hq, nK, nQ)``). Inputs are padded ``[B, S, H, D]``;
the kernels work on ``[B, H, S, D]`` (tiles whose last two dims are ``(seq, head_dim)``).
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
from pallas_kernels.sparse_attention.selection import transposed_selection


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


def _dq_kernel(idx_ref, cnt_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, *refs,
               spec: AttentionSpec):
  if spec.segments:
    qseg_ref, kvseg_ref, dq_ref, acc_sc = refs
  else:
    dq_ref, acc_sc = refs
  b, h, qi, j = (pl.program_id(a) for a in range(4))
  bs = b if spec.sel_batch > 1 else 0
  hs = lax.div(h, spec.sel_group)

  @pl.when(j == 0)
  def _init():
    acc_sc[...] = jnp.zeros(acc_sc.shape, jnp.float32)

  @pl.when(j < cnt_ref[bs, hs, qi])
  def _step():
    shape = (spec.block_q, spec.block_k)
    rows = qi * spec.block_q + lax.broadcasted_iota(jnp.int32, shape, 0)
    cols = idx_ref[bs, hs, qi, j] * spec.block_k + lax.broadcasted_iota(jnp.int32, shape, 1)
    seg = dict(q_seg=qseg_ref[...], kv_seg=kvseg_ref[...]) if spec.segments else {}
    mask = tile.tile_mask(rows, cols, causal=spec.causal, kv_len=spec.kv_len, **seg)
    k = k_ref[...]
    _, ds = tile.tile_grads(q_ref[...], k, v_ref[...], do_ref[...],
                            tile.base2_lse(lse_ref[...]), delta_ref[...], scale=spec.scale,
                            mask=mask, dot_qk=_dot_qk)
    acc_sc[...] += _dot_pv(ds.astype(k.dtype), k)

  @pl.when(j == pl.num_programs(3) - 1)
  def _finish():
    dq_ref[...] = (acc_sc[...] * spec.scale).astype(dq_ref.dtype)


def _dkv_kernel(idx_ref, cnt_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, *refs,
                spec: AttentionSpec):
  if spec.segments:
    qseg_ref, kvseg_ref, dk_ref, dv_ref, dk_sc, dv_sc = refs
  else:
    dk_ref, dv_ref, dk_sc, dv_sc = refs
  b, h, kb, j = (pl.program_id(a) for a in range(4))
  bs = b if spec.sel_batch > 1 else 0
  hs = lax.div(h, spec.sel_group)

  @pl.when(j == 0)
  def _init():
    dk_sc[...] = jnp.zeros(dk_sc.shape, jnp.float32)
    dv_sc[...] = jnp.zeros(dv_sc.shape, jnp.float32)

  @pl.when(j < cnt_ref[bs, hs, kb])
  def _step():
    shape = (spec.block_q, spec.block_k)
    rows = idx_ref[bs, hs, kb, j] * spec.block_q + lax.broadcasted_iota(jnp.int32, shape, 0)
    cols = kb * spec.block_k + lax.broadcasted_iota(jnp.int32, shape, 1)
    seg = dict(q_seg=qseg_ref[...], kv_seg=kvseg_ref[...]) if spec.segments else {}
    mask = tile.tile_mask(rows, cols, causal=spec.causal, kv_len=spec.kv_len, **seg)
    q, do = q_ref[...], do_ref[...]
    p, ds = tile.tile_grads(q, k_ref[...], v_ref[...], do, tile.base2_lse(lse_ref[...]),
                            delta_ref[...], scale=spec.scale, mask=mask, dot_qk=_dot_qk)
    dv_sc[...] += _dot_pv(p.astype(do.dtype).T, do)
    dk_sc[...] += _dot_pv(ds.astype(q.dtype).T, q)

  @pl.when(j == pl.num_programs(3) - 1)
  def _finish():
    dk_ref[...] = dk_sc[...] * spec.scale
    dv_ref[...] = dv_sc[...]


def backward(q, k, v, out, lse, dout, indices, counts, q_seg, kv_seg, spec: AttentionSpec):
  """Padded inputs as in ``forward``; returns ``(dq, dk, dv)`` in the inputs' dtypes.

  A dQ kernel walks the selection like the forward; a dK/dV kernel walks the transposed
  selection (``selection.transposed_selection``), one result per query head, summed over each
  GQA group in XLA.
  """
  b, sqp, hq, d = q.shape
  skp, hkv = k.shape[1], k.shape[2]
  bq, bk = spec.block_q, spec.block_k
  nq, nk = sqp // bq, skp // bk
  qh, kh, vh, doh = (jnp.swapaxes(x, 1, 2) for x in (q, k, v, dout))
  delta = jnp.sum(out.astype(jnp.float32) * dout.astype(jnp.float32), -1)
  lse4, delta4 = lse[..., None], jnp.swapaxes(delta, 1, 2)[..., None]  # [B, Hq, Sq', 1]
  t_indices, t_counts = transposed_selection(indices, counts, nk)
  sel = lambda bi: bi if spec.sel_batch > 1 else 0
  params = pltpu.CompilerParams(
      dimension_semantics=("parallel", "parallel", "parallel", "arbitrary"))

  def call(kernel, table, table_counts, steps, q_idx, kv_idx, outs, scratch, name):
    """One backward kernel; ``q_idx``/``kv_idx`` give the q-side / kv-side block index."""
    q_map = lambda bi, h, i, j, idx, cnt: (bi, h, q_idx(bi, h, i, j, idx), 0)
    kv_map = lambda bi, h, i, j, idx, cnt: (bi, lax.div(h, spec.kv_group),
                                           kv_idx(bi, h, i, j, idx), 0)
    in_specs = [pl.BlockSpec((None, None, bq, d), q_map),
                pl.BlockSpec((None, None, bk, d), kv_map),
                pl.BlockSpec((None, None, bk, d), kv_map),
                pl.BlockSpec((None, None, bq, d), q_map),
                pl.BlockSpec((None, None, bq, 1), q_map),
                pl.BlockSpec((None, None, bq, 1), q_map)]
    args = [qh, kh, vh, doh, lse4, delta4]
    if spec.segments:
      in_specs += [
          pl.BlockSpec((None, bq, 1), lambda bi, h, i, j, idx, cnt:
                       (bi, q_idx(bi, h, i, j, idx), 0)),
          pl.BlockSpec((None, 1, bk), lambda bi, h, i, j, idx, cnt:
                       (bi, 0, kv_idx(bi, h, i, j, idx)))]
      args += [q_seg[:, :, None], kv_seg[:, None, :]]
    out_specs = [pl.BlockSpec((None, None, o.shape[2] // steps, d),
                              lambda bi, h, i, j, idx, cnt: (bi, h, i, 0)) for o in outs]
    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=2, grid=(b, hq, steps, table.shape[-1]), in_specs=in_specs,
        out_specs=out_specs, scratch_shapes=scratch)
    return pl.pallas_call(functools.partial(kernel, spec=spec), grid_spec=grid_spec,
                          out_shape=outs, compiler_params=params, interpret=spec.interpret,
                          name=name)(table, table_counts, *args)


  def listed(bi, h, i, j, idx):  # the j-th block listed for grid row i
    return idx[sel(bi), lax.div(h, spec.sel_group), i, j]

  own = lambda bi, h, i, j, idx: i
  (dq,) = call(_dq_kernel, indices, counts, nq, own, listed,
               [jax.ShapeDtypeStruct((b, hq, sqp, d), q.dtype)],
               [pltpu.VMEM((bq, d), jnp.float32)], "sparse_attention_dq")
  per_head = jax.ShapeDtypeStruct((b, hq, skp, d), jnp.float32)
  dk, dv = call(_dkv_kernel, t_indices, t_counts, nk, listed, own, [per_head, per_head],
                [pltpu.VMEM((bk, d), jnp.float32)] * 2, "sparse_attention_dkv")
  group = lambda x, like: (jnp.swapaxes(x, 1, 2).reshape(b, skp, hkv, spec.kv_group, d)
                           .sum(3).astype(like.dtype))
  return jnp.swapaxes(dq, 1, 2), group(dk, k), group(dv, v)
