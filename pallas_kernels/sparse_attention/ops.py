"""Public block-sparse attention: validation, padding, backend dispatch, custom VJP."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from pallas_kernels.errors import ConfigError, ShapeError
from pallas_kernels import backend
from pallas_kernels.sparse_attention import mosaic_gpu, mosaic_tpu, triton
from pallas_kernels.sparse_attention.config import AttentionSpec
from pallas_kernels.sparse_attention.reference import sparse_attention_reference
from pallas_kernels.sparse_attention.selection import BlockSelection

_FORWARDS = {"mosaic_tpu": mosaic_tpu.forward, "mosaic_gpu": mosaic_gpu.forward,
             "triton": triton.forward}
_BACKWARDS = {"mosaic_tpu": mosaic_tpu.backward, "mosaic_gpu": mosaic_gpu.backward,
              "triton": triton.backward}
AVAILABLE = ("mosaic_tpu", "mosaic_gpu", "triton", "xla")
# Sentinels for padded positions: a padded query matches no key, a padded key no query.
_Q_PAD, _KV_PAD = -(2 ** 31), -(2 ** 31) + 1


def _pad_to(x: jax.Array, length: int, axis: int, value=0) -> jax.Array:
  pad = [(0, 0)] * x.ndim
  pad[axis] = (0, length - x.shape[axis])
  return jnp.pad(x, pad, constant_values=value)


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8))
def _attend(q, k, v, indices, counts, q_seg, kv_seg, spec, impl):
  return _FORWARDS[impl](q, k, v, indices, counts, q_seg, kv_seg, spec)[0]


def _attend_fwd(q, k, v, indices, counts, q_seg, kv_seg, spec, impl):
  out, lse = _FORWARDS[impl](q, k, v, indices, counts, q_seg, kv_seg, spec)
  return out, (q, k, v, indices, counts, q_seg, kv_seg, out, lse)


def _attend_bwd(spec, impl, res, dout):
  q, k, v, indices, counts, q_seg, kv_seg, out, lse = res
  dq, dk, dv = _BACKWARDS[impl](q, k, v, out, lse, dout, indices, counts, q_seg, kv_seg, spec)
  return dq, dk, dv, None, None, None, None


_attend.defvjp(_attend_fwd, _attend_bwd)
# Eager calls reuse the compiled kernels (un-jitted, each pallas_call's fresh kernel partial
# would recompile them every call).
_attend_jit = jax.jit(_attend, static_argnums=(7, 8))


def sparse_attention(q: jax.Array, k: jax.Array, v: jax.Array, selection: BlockSelection, *,
                     causal: bool = False, q_segment_ids: jax.Array | None = None,
                     kv_segment_ids: jax.Array | None = None, sm_scale: float | None = None,
                     implementation: str | None = None, interpret: bool | None = None,
                     num_warps: int = 8, num_stages: int = 2) -> jax.Array:
  """Attention of ``q [B, Sq, Hq, D]`` over the selected key blocks of ``k, v [B, Sk, Hkv, D]``.

  Meaning: ``reference.sparse_attention_reference`` (fully masked query rows output 0; causal
  is top-left aligned; ``q_segment_ids [B, Sq]`` / ``kv_segment_ids [B, Sk]`` int32 restrict
  attention to equal ids, which is also how padding is expressed). ``selection`` must have
  ``ceil(Sq / block_q)`` query blocks and index ``ceil(Sk / block_k)`` key blocks; lengths that
  are not block multiples are padded here. ``implementation``: None (by platform),
  ``"mosaic_tpu"``, ``"mosaic_gpu"`` (Hopper, bf16/f16, head_dim 64/128, blocks of 128s: None falls back to
  ``"triton"`` for other calls), ``"triton"`` or ``"xla"`` (the reference). The TPU and Triton
  kernels run in interpret mode where the platform cannot compile them unless ``interpret``
  says otherwise; Mosaic GPU has no interpret mode here. Gradients: a custom VJP whose dQ and
  dK/dV are Pallas kernels of the same backend (recompute from the forward's log-sum-exp);
  ``xla`` differentiates the reference. ``num_warps`` tunes the Triton kernels,
  ``num_stages`` their pipeline depth and Mosaic GPU's number of K/V buffers.
  """
  b, sq, hq, d = q.shape
  _, sk, hkv, _ = k.shape
  if k.shape != v.shape or k.shape[0] != b or k.shape[3] != d:
    raise ShapeError("k/v", (k.shape, v.shape), f"equal shapes [{b}, Sk, Hkv, {d}]")
  if hq % hkv:
    raise ShapeError("num_kv_heads", hkv, f"a divisor of the {hq} query heads")
  bs, hs, nq, _ = selection.kv_block_indices.shape
  bq, bk = selection.block_q, selection.block_k
  if bs not in (1, b) or hq % hs or nq != -(-sq // bq):
    raise ShapeError("selection.kv_block_indices", selection.kv_block_indices.shape,
                     f"[1|{b}, a divisor of {hq}, {-(-sq // bq)} query blocks, maxK]")
  if (q_segment_ids is None) != (kv_segment_ids is None):
    raise ConfigError("segment_ids", "only one of q/kv given", "both or neither")
  scale = d ** -0.5 if sm_scale is None else float(sm_scale)
  impl = backend.resolve(implementation, AVAILABLE)
  spec = AttentionSpec(
      block_q=bq, block_k=bk, seq_q=sq, seq_k=sk, num_q_heads=hq, num_kv_heads=hkv,
      num_sel_heads=hs, sel_batch=bs, causal=causal, segments=q_segment_ids is not None,
      scale=scale, num_warps=num_warps, num_stages=num_stages)
  if impl == "mosaic_gpu" and (reason := mosaic_gpu.unsupported(spec, (q.dtype, k.dtype, v.dtype), d)):
    if implementation is not None:
      raise ConfigError("implementation", implementation, reason)
    impl = "triton"
  if impl == "xla":
    return sparse_attention_reference(q, k, v, selection, causal=causal,
                                      q_segment_ids=q_segment_ids,
                                      kv_segment_ids=kv_segment_ids, sm_scale=scale)
  spec = dataclasses.replace(
      spec, interpret=backend.interpret_default(impl) if interpret is None else interpret)
  sqp, skp = nq * bq, -(-sk // bk) * bk
  qp = _pad_to(q, sqp, 1)
  kp, vp = _pad_to(k, skp, 1), _pad_to(v, skp, 1)
  q_seg = kv_seg = None
  if spec.segments:
    q_seg = _pad_to(q_segment_ids.astype(jnp.int32), sqp, 1, _Q_PAD)
    kv_seg = _pad_to(kv_segment_ids.astype(jnp.int32), skp, 1, _KV_PAD)
  indices = selection.kv_block_indices.astype(jnp.int32)
  counts = selection.kv_block_counts.astype(jnp.int32)
  out = _attend_jit(qp, kp, vp, indices, counts, q_seg, kv_seg, spec, impl)
  return out[:, :sq]
