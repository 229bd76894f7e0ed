"""GPU kernel (Pallas Triton): per-tile attention probability sums, two passes per query tile.

Grid ``(nQ, B, Hq)``: each program keeps its query tile and streams the key tiles of its KV
head twice (only up to the diagonal when causal): pass 1 folds the running row max and sum,
pass 2 adds each tile's probabilities ``exp2(s - lse2)`` into a register row of ``nK'`` sums
(``nK`` rounded up to a power of two, as Triton wants), stored once. Tiles past the diagonal
stay 0. Works on the padded ``[B, S, H, D]`` layout; memory is the inputs plus the output.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from pallas_kernels.block_importance import stream
from pallas_kernels.sparse_attention.config import AttentionSpec
from pallas_kernels.sparse_attention.tile import LOG2E, NEG_INF, tile_mask


def _kernel(q_ref, k_ref, *refs, spec: AttentionSpec, nk: int):
  if spec.segments:
    qseg_ref, kvseg_ref, o_ref = refs
  else:
    (o_ref,) = refs
  qi = pl.program_id(0)
  bq, bk = spec.block_q, spec.block_k
  q = q_ref[...]
  rows = qi * bq + jnp.arange(bq)[:, None]
  q_seg = qseg_ref[...][:, None] if spec.segments else None
  pad_rows = rows < spec.seq_q if spec.seq_q % bq else None

  def scores(j):
    start = pl.multiple_of(j * bk, bk)
    s = pltriton.dot(q, k_ref[pl.ds(start, bk), :].T) * (spec.scale * LOG2E)
    cols = start + jnp.arange(bk)[None, :]
    seg = dict(q_seg=q_seg, kv_seg=kvseg_ref[pl.ds(start, bk)][None, :]) if spec.segments else {}
    mask = stream.and_masks(
        tile_mask(rows, cols, causal=spec.causal, kv_len=spec.kv_len, **seg), pad_rows)
    return s, mask

  steps = stream.num_key_tiles(qi, spec, nk)
  m, l = lax.fori_loop(0, steps, lambda j, c: stream.lse_step(*scores(j), *c),
                       (jnp.full((bq, 1), NEG_INF, jnp.float32), jnp.zeros((bq, 1), jnp.float32)))
  lse = stream.lse2(m, l)
  slots = jnp.arange(o_ref.shape[-1])

  def tile_sum(j, acc):
    p = stream.probabilities(*scores(j), lse)
    return jnp.where(slots == j, jnp.sum(jnp.sum(p, axis=1)), acc)

  o_ref[...] = lax.fori_loop(0, steps, tile_sum, jnp.zeros(slots.shape, jnp.float32))


def tile_sums(q, k, q_seg, kv_seg, spec: AttentionSpec) -> jax.Array:
  """Padded ``q [B, Sq', Hq, D]``, ``k [B, Sk', Hkv, D]`` -> probability sums ``[B, Hq, nQ, nK]``."""
  b, sqp, hq, d = q.shape
  skp = k.shape[1]
  bq, bk = spec.block_q, spec.block_k
  nq, nk = sqp // bq, skp // bk
  nk_pow2 = pl.next_power_of_2(nk)
  in_specs = [pl.BlockSpec((None, bq, None, d), lambda qi, bi, h: (bi, qi, h, 0)),
              pl.BlockSpec((None, skp, None, d), lambda qi, bi, h: (bi, 0, h // spec.kv_group, 0))]
  args = [q, k]
  if spec.segments:
    in_specs += [pl.BlockSpec((None, bq), lambda qi, bi, h: (bi, qi)),
                 pl.BlockSpec((None, skp), lambda qi, bi, h: (bi, 0))]
    args += [q_seg, kv_seg]
  sums = pl.pallas_call(
      functools.partial(_kernel, spec=spec, nk=nk),
      grid=(nq, b, hq),
      in_specs=in_specs,
      out_specs=pl.BlockSpec((None, None, None, nk_pow2), lambda qi, bi, h: (bi, h, qi, 0)),
      out_shape=jax.ShapeDtypeStruct((b, hq, nq, nk_pow2), jnp.float32),
      compiler_params=pltriton.CompilerParams(  # 4-byte tiles: one stage fits shared memory
          num_warps=spec.num_warps, num_stages=spec.num_stages if q.dtype.itemsize <= 2 else 1),
      interpret=spec.interpret,
      name="block_importance_gpu",
  )(*args)
  return sums[..., :nk]
