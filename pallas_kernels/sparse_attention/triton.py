"""GPU kernels (Pallas Triton): block-sparse flash attention forward and backward.

Forward, grid ``(nQ, B, Hq)``: each program keeps its query tile in registers and loops over
only the ``kv_block_counts`` selected key blocks, reading each block index from the selection
table and loading that K/V tile by pointer offset: unselected blocks are neither loaded nor
computed. Backward: a dQ kernel with the same loop, and a dK/dV kernel (grid ``(nK, B, Hq)``)
that walks the transposed selection (per key block, the query blocks that chose it); per-query-
head dK/dV are summed over each GQA group in XLA. Works on the padded ``[B, S, H, D]`` layout.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from pallas_kernels.sparse_attention import tile
from pallas_kernels.sparse_attention.config import AttentionSpec
from pallas_kernels.sparse_attention.selection import transposed_selection


def _dot_qk(q, k):
  return pltriton.dot(q, k.T)


def _dot_pv(p, v):
  return pltriton.dot(p, v)


def _sub_block(block: int, dtype) -> int:
  """Rows loaded per step from a selected block: 4-byte tiles are halved to fit shared memory."""
  return block if jnp.dtype(dtype).itemsize <= 2 or block < 32 else block // 2


def _kernel(idx_ref, cnt_ref, q_ref, k_ref, v_ref, *refs, spec: AttentionSpec):
  if spec.segments:
    qseg_ref, kvseg_ref, o_ref, lse_ref = refs
  else:
    o_ref, lse_ref = refs
  qi = pl.program_id(0)
  bq, bk = spec.block_q, spec.block_k
  q = q_ref[...]
  rows = qi * bq + jnp.arange(bq)[:, None]
  q_seg = qseg_ref[...][:, None] if spec.segments else None

  sub = _sub_block(bk, q.dtype)

  def body(j, carry):
    block_start = idx_ref[j] * bk
    for t in range(bk // sub):
      start = pl.multiple_of(block_start + t * sub, sub)
      k = k_ref[pl.ds(start, sub), :]
      v = v_ref[pl.ds(start, sub), :]
      cols = start + jnp.arange(sub)[None, :]
      seg = (dict(q_seg=q_seg, kv_seg=kvseg_ref[pl.ds(start, sub)][None, :])
             if spec.segments else {})
      mask = tile.tile_mask(rows, cols, causal=spec.causal, kv_len=spec.kv_len, **seg)
      carry = tile.online_softmax_step(q, k, v, *carry, scale=spec.scale, mask=mask,
                                       dot_qk=_dot_qk, dot_pv=_dot_pv)
    return carry

  init = (jnp.full((bq, 1), tile.NEG_INF, jnp.float32), jnp.zeros((bq, 1), jnp.float32),
          jnp.zeros((bq, q.shape[-1]), jnp.float32))
  m, l, acc = lax.fori_loop(0, cnt_ref[qi], body, init)
  out, lse = tile.finalize(m, l, acc)
  o_ref[...] = out.astype(o_ref.dtype)
  lse_ref[...] = lse[:, 0]


def _stages(spec: AttentionSpec, dtype) -> int:
  """Pipeline depth that fits shared memory (227 KiB): 4-byte K/V tiles get one stage."""
  return 1 if jnp.dtype(dtype).itemsize > 2 else spec.num_stages


def forward(q, k, v, indices, counts, q_seg, kv_seg, spec: AttentionSpec):
  """Padded ``q [B, Sq', Hq, D]``, ``k, v [B, Sk', Hkv, D]`` -> ``(out, lse [B, Hq, Sq'])``."""
  b, sqp, hq, d = q.shape
  skp = k.shape[1]
  bq = spec.block_q
  nq, max_k = indices.shape[2], indices.shape[3]

  def sel(bi, h):
    return (bi if spec.sel_batch > 1 else 0), h // spec.sel_group

  in_specs = [
      pl.BlockSpec((None, None, None, max_k), lambda qi, bi, h: (*sel(bi, h), qi, 0)),
      pl.BlockSpec((None, None, nq), lambda qi, bi, h: (*sel(bi, h), 0)),
      pl.BlockSpec((None, bq, None, d), lambda qi, bi, h: (bi, qi, h, 0)),
      pl.BlockSpec((None, skp, None, d), lambda qi, bi, h: (bi, 0, h // spec.kv_group, 0)),
      pl.BlockSpec((None, skp, None, d), lambda qi, bi, h: (bi, 0, h // spec.kv_group, 0)),
  ]
  args = [indices, counts, q, k, v]
  if spec.segments:
    in_specs += [pl.BlockSpec((None, bq), lambda qi, bi, h: (bi, qi)),
                 pl.BlockSpec((None, skp), lambda qi, bi, h: (bi, 0))]
    args += [q_seg, kv_seg]
  return pl.pallas_call(
      functools.partial(_kernel, spec=spec),
      grid=(nq, b, hq),
      in_specs=in_specs,
      out_specs=[pl.BlockSpec((None, bq, None, d), lambda qi, bi, h: (bi, qi, h, 0)),
                 pl.BlockSpec((None, None, bq), lambda qi, bi, h: (bi, h, qi))],
      out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype),
                 jax.ShapeDtypeStruct((b, hq, sqp), jnp.float32)],
      compiler_params=pltriton.CompilerParams(num_warps=spec.num_warps,
                                              num_stages=_stages(spec, q.dtype)),
      interpret=spec.interpret,
      name="sparse_attention_fwd_gpu",
  )(*args)


def _dq_kernel(idx_ref, cnt_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, *refs,
               spec: AttentionSpec):
  if spec.segments:
    qseg_ref, kvseg_ref, dq_ref = refs
  else:
    (dq_ref,) = refs
  qi = pl.program_id(0)
  bq, bk = spec.block_q, spec.block_k
  q, do = q_ref[...], do_ref[...]
  lse2, delta = tile.base2_lse(lse_ref[...])[:, None], delta_ref[...][:, None]
  rows = qi * bq + jnp.arange(bq)[:, None]
  q_seg = qseg_ref[...][:, None] if spec.segments else None
  sub = _sub_block(bk, q.dtype)

  def body(j, dq):
    block_start = idx_ref[j] * bk
    for t in range(bk // sub):
      start = pl.multiple_of(block_start + t * sub, sub)
      k, v = k_ref[pl.ds(start, sub), :], v_ref[pl.ds(start, sub), :]
      cols = start + jnp.arange(sub)[None, :]
      seg = (dict(q_seg=q_seg, kv_seg=kvseg_ref[pl.ds(start, sub)][None, :])
             if spec.segments else {})
      mask = tile.tile_mask(rows, cols, causal=spec.causal, kv_len=spec.kv_len, **seg)
      _, ds = tile.tile_grads(q, k, v, do, lse2, delta, scale=spec.scale, mask=mask,
                              dot_qk=_dot_qk)
      dq = dq + _dot_pv(ds.astype(k.dtype), k)
    return dq

  dq = jax.lax.fori_loop(0, cnt_ref[qi], body, jnp.zeros(q.shape, jnp.float32))
  dq_ref[...] = (dq * spec.scale).astype(dq_ref.dtype)


def _dkv_kernel(idx_ref, cnt_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, *refs,
                spec: AttentionSpec):
  if spec.segments:
    qseg_ref, kvseg_ref, dk_ref, dv_ref = refs
  else:
    dk_ref, dv_ref = refs
  kb = pl.program_id(0)
  bq, bk = spec.block_q, spec.block_k
  k, v = k_ref[...], v_ref[...]
  cols = kb * bk + jnp.arange(bk)[None, :]
  kv_seg = kvseg_ref[...][None, :] if spec.segments else None
  sub = _sub_block(bq, k.dtype)

  def body(j, carry):
    dk, dv = carry
    block_start = idx_ref[j] * bq
    for t in range(bq // sub):
      start = pl.multiple_of(block_start + t * sub, sub)
      q, do = q_ref[pl.ds(start, sub), :], do_ref[pl.ds(start, sub), :]
      lse2 = tile.base2_lse(lse_ref[pl.ds(start, sub)])[:, None]
      delta = delta_ref[pl.ds(start, sub)][:, None]
      rows = start + jnp.arange(sub)[:, None]
      seg = (dict(q_seg=qseg_ref[pl.ds(start, sub)][:, None], kv_seg=kv_seg)
             if spec.segments else {})
      mask = tile.tile_mask(rows, cols, causal=spec.causal, kv_len=spec.kv_len, **seg)
      p, ds = tile.tile_grads(q, k, v, do, lse2, delta, scale=spec.scale, mask=mask,
                              dot_qk=_dot_qk)
      dv = dv + _dot_pv(p.astype(do.dtype).T, do)
      dk = dk + _dot_pv(ds.astype(q.dtype).T, q)
    return dk, dv

  zeros = jnp.zeros(k.shape, jnp.float32)
  dk, dv = jax.lax.fori_loop(0, cnt_ref[kb], body, (zeros, zeros))
  dk_ref[...], dv_ref[...] = dk * spec.scale, dv


def backward(q, k, v, out, lse, dout, indices, counts, q_seg, kv_seg, spec: AttentionSpec):
  """Padded inputs as in ``forward``; returns ``(dq, dk, dv)`` in the inputs' dtypes."""
  b, sqp, hq, d = q.shape
  skp, hkv = k.shape[1], k.shape[2]
  bq, bk = spec.block_q, spec.block_k
  nq, nk = sqp // bq, skp // bk
  delta = jnp.swapaxes(jnp.sum(out.astype(jnp.float32) * dout.astype(jnp.float32), -1), 1, 2)
  t_indices, t_counts = transposed_selection(indices, counts, nk)
  params = pltriton.CompilerParams(num_warps=spec.num_warps, num_stages=_stages(spec, q.dtype))

  def sel(bi, h):
    return (bi if spec.sel_batch > 1 else 0), h // spec.sel_group

  def common_specs(table, steps, q_block, kv_block, q_map, kv_map):
    """Selection row, counts, q, k, v, dO, lse, delta specs for one kernel's grid."""
    return [pl.BlockSpec((None, None, None, table.shape[-1]),
                         lambda i, bi, h: (*sel(bi, h), i, 0)),
            pl.BlockSpec((None, None, steps), lambda i, bi, h: (*sel(bi, h), 0)),
            pl.BlockSpec((None, q_block, None, d), q_map),
            pl.BlockSpec((None, kv_block, None, d), kv_map),
            pl.BlockSpec((None, kv_block, None, d), kv_map),
            pl.BlockSpec((None, q_block, None, d), q_map),
            pl.BlockSpec((None, None, q_block), lambda i, bi, h: (bi, h, q_map(i, bi, h)[1])),
            pl.BlockSpec((None, None, q_block), lambda i, bi, h: (bi, h, q_map(i, bi, h)[1]))]

  args = [q, k, v, dout, lse, delta]
  seg_args = [q_seg, kv_seg] if spec.segments else []
  dq_specs = common_specs(indices, nq, bq, skp, lambda i, bi, h: (bi, i, h, 0),
                          lambda i, bi, h: (bi, 0, h // spec.kv_group, 0))
  if spec.segments:
    dq_specs += [pl.BlockSpec((None, bq), lambda i, bi, h: (bi, i)),
                 pl.BlockSpec((None, skp), lambda i, bi, h: (bi, 0))]
  dq = pl.pallas_call(
      functools.partial(_dq_kernel, spec=spec), grid=(nq, b, hq), in_specs=dq_specs,
      out_specs=pl.BlockSpec((None, bq, None, d), lambda i, bi, h: (bi, i, h, 0)),
      out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype), compiler_params=params,
      interpret=spec.interpret, name="sparse_attention_dq_gpu",
  )(indices, counts, *args, *seg_args)

  dkv_specs = common_specs(t_indices, nk, sqp, bk, lambda i, bi, h: (bi, 0, h, 0),
                           lambda i, bi, h: (bi, i, h // spec.kv_group, 0))
  if spec.segments:
    dkv_specs += [pl.BlockSpec((None, sqp), lambda i, bi, h: (bi, 0)),
                  pl.BlockSpec((None, bk), lambda i, bi, h: (bi, i))]
  per_head = jax.ShapeDtypeStruct((b, skp, hq, d), jnp.float32)
  out_spec = pl.BlockSpec((None, bk, None, d), lambda i, bi, h: (bi, i, h, 0))
  dk, dv = pl.pallas_call(
      functools.partial(_dkv_kernel, spec=spec), grid=(nk, b, hq), in_specs=dkv_specs,
      out_specs=[out_spec, out_spec], out_shape=[per_head, per_head], compiler_params=params,
      interpret=spec.interpret, name="sparse_attention_dkv_gpu",
  )(t_indices, t_counts, *args, *seg_args)
  group = lambda x, like: x.reshape(b, skp, hkv, spec.kv_group, d).sum(3).astype(like.dtype)
  return dq, group(dk, k), group(dv, v)
