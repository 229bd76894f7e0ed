"""Backward pass of block-sparse attention: blockwise recompute in JAX (the TPU backend's).

A ``lax.scan`` over query blocks gathers only the selected K/V blocks of each query block,
recomputes ``P = exp(S - lse)`` from the forward's log-sum-exp, and forms
``dV = P^T dO``, ``dS = P * (dO V^T - rowsum(dO * O))``, ``dQ = dS K``, ``dK = dS^T Q``;
dK/dV are scatter-added into their blocks. Work and memory per step are proportional to the
selected blocks, not to the dense sequence. (The Triton backend has Pallas dQ and dK/dV
kernels, ``gpu.backward``; a Mosaic TPU port of those is not written yet.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from pallas_kernels.sparse_attention.config import AttentionSpec


def backward(q, k, v, out, lse, dout, indices, counts, q_seg, kv_seg, spec: AttentionSpec):
  """Padded inputs as in the forward; returns ``(dq, dk, dv)`` in the inputs' dtypes."""
  b, sqp, hq, d = q.shape
  skp, hkv = k.shape[1], k.shape[2]
  bq, bk = spec.block_q, spec.block_k
  nq, nk, max_k = sqp // bq, skp // bk, indices.shape[-1]
  f32 = jnp.float32
  delta = jnp.sum(out.astype(f32) * dout.astype(f32), axis=-1)  # [B, Sq', Hq]
  kb, vb = (x.reshape(b, nk, bk, hkv, d) for x in (k, v))
  heads = jnp.arange(hq)
  sel = lambda x: jnp.broadcast_to(x[:, heads // spec.sel_group], (b, hq) + x.shape[2:])
  idx_all, cnt_all = sel(indices), sel(counts)  # [B, Hq, nQ, maxK], [B, Hq, nQ]
  bi = jnp.arange(b)[:, None, None]
  hk = (heads // spec.kv_group)[None, :, None]

  def step(carry, qi):
    dk_acc, dv_acc = carry
    take = lambda x: lax.dynamic_slice_in_dim(x, qi * bq, bq, axis=1)
    qb, dob, deltab = take(q), take(dout), take(delta)
    lseb = lax.dynamic_slice_in_dim(lse, qi * bq, bq, axis=2)  # [B, Hq, bq]
    ids = idx_all[:, :, qi]  # [B, Hq, maxK]
    ksel, vsel = kb[bi, ids, :, hk], vb[bi, ids, :, hk]  # [B, Hq, maxK, bk, D]
    cols = ids[..., None] * bk + jnp.arange(bk)  # [B, Hq, maxK, bk]
    valid = (jnp.arange(max_k) < cnt_all[:, :, qi, None])[..., None] & (cols < spec.seq_k)
    mask = jnp.broadcast_to(valid[:, :, None], (b, hq, bq, max_k, bk))
    rows = (qi * bq + jnp.arange(bq))[:, None, None]
    if spec.causal:
      mask &= rows >= cols[:, :, None]
    if spec.segments:
      qs = lax.dynamic_slice_in_dim(q_seg, qi * bq, bq, axis=1)[:, None, :, None, None]
      mask &= qs == kv_seg[jnp.arange(b)[:, None, None, None], cols][:, :, None]
    s = jnp.einsum("bqhd,bhjkd->bhqjk", qb, ksel, preferred_element_type=f32) * spec.scale
    p = jnp.where(mask, jnp.exp(s - lseb[..., None, None]), 0.0)
    dp = jnp.einsum("bqhd,bhjkd->bhqjk", dob, vsel, preferred_element_type=f32)
    ds = p * (dp - jnp.swapaxes(deltab, 1, 2)[..., None, None]) * spec.scale
    dq_b = jnp.einsum("bhqjk,bhjkd->bqhd", ds, ksel.astype(f32))
    dk_sel = jnp.einsum("bhqjk,bqhd->bhjkd", ds, qb.astype(f32))
    dv_sel = jnp.einsum("bhqjk,bqhd->bhjkd", p, dob.astype(f32))
    return (dk_acc.at[bi, ids, :, hk].add(dk_sel),
            dv_acc.at[bi, ids, :, hk].add(dv_sel)), dq_b

  zeros = jnp.zeros((b, nk, bk, hkv, d), f32)
  (dk, dv), dq = lax.scan(step, (zeros, zeros), jnp.arange(nq))
  dq = jnp.moveaxis(dq, 0, 1).reshape(b, sqp, hq, d)
  return dq.astype(q.dtype), dk.reshape(k.shape).astype(k.dtype), dv.reshape(v.shape).astype(v.dtype)
