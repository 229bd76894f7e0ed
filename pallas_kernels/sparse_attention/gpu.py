"""GPU forward kernel (Pallas Triton): block-sparse flash attention.

Grid ``(nQ, B, Hq)``; each program keeps its query tile in registers and loops over only the
``kv_block_counts`` selected key blocks, reading each block index from the selection table and
loading that K/V tile by pointer offset: unselected blocks are neither loaded nor computed.
Works directly on the padded ``[B, S, H, D]`` layout.
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


def _dot_qk(q, k):
  return pltriton.dot(q, k.T)


def _dot_pv(p, v):
  return pltriton.dot(p, v)


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

  def body(j, carry):
    kv_block = idx_ref[j]
    start = pl.multiple_of(kv_block * bk, bk)
    k = k_ref[pl.ds(start, bk), :]
    v = v_ref[pl.ds(start, bk), :]
    cols = start + jnp.arange(bk)[None, :]
    seg = dict(q_seg=q_seg, kv_seg=kvseg_ref[pl.ds(start, bk)][None, :]) if spec.segments else {}
    mask = tile.tile_mask(rows, cols, causal=spec.causal, kv_len=spec.kv_len, **seg)
    return tile.online_softmax_step(q, k, v, *carry, scale=spec.scale, mask=mask,
                                    dot_qk=_dot_qk, dot_pv=_dot_pv)

  init = (jnp.full((bq, 1), tile.NEG_INF, jnp.float32), jnp.zeros((bq, 1), jnp.float32),
          jnp.zeros((bq, q.shape[-1]), jnp.float32))
  m, l, acc = lax.fori_loop(0, cnt_ref[qi], body, init)
  out, lse = tile.finalize(m, l, acc)
  o_ref[...] = out.astype(o_ref.dtype)
  lse_ref[...] = lse[:, 0]


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
                                              num_stages=spec.num_stages),
      interpret=spec.interpret,
      name="sparse_attention_fwd_gpu",
  )(*args)
