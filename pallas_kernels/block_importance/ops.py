"""Public tile importance: validation, padding, backend dispatch."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from pallas_kernels import backend
from pallas_kernels.block_importance import mosaic_tpu, triton, xla
from pallas_kernels.block_importance.reference import tile_means
from pallas_kernels.errors import ConfigError, ShapeError
from pallas_kernels.sparse_attention.config import AttentionSpec

AVAILABLE = ("mosaic_tpu", "triton", "xla")


def _pad_to(x: jax.Array, length: int, axis: int) -> jax.Array:
  pad = [(0, 0)] * x.ndim
  pad[axis] = (0, length - x.shape[axis])
  return jnp.pad(x, pad)


_TILE_SUMS = {"mosaic_tpu": mosaic_tpu.tile_sums, "triton": triton.tile_sums,
              "xla": xla.tile_sums}


def block_importance(q: jax.Array, k: jax.Array, block_q: int, block_k: int, *,
                     per_kv_head: bool = True, causal: bool = False,
                     sm_scale: float | None = None, q_segment_ids: jax.Array | None = None,
                     kv_segment_ids: jax.Array | None = None,
                     implementation: str | None = None, interpret: bool | None = None,
                     num_warps: int = 8, num_stages: int = 2) -> jax.Array:
  """SparseD tile importance: mean attention probability per (query block, key block) tile.

  ``q [B, Sq, Hq, D]``, ``k [B, Sk, Hkv, D]`` -> float32 ``[B, Hkv | Hq, nQ, nK]`` (meaning:
  ``reference.block_importance_reference``; ``per_kv_head`` averages each GQA group; causal is
  top-left aligned; ``q_segment_ids [B, Sq]`` / ``kv_segment_ids [B, Sk]`` restrict attention
  to equal ids, which is how padding is expressed). Computed flash-style, never holding the
  ``[Sq, Sk]`` matrix: per query block, pass 1 streams the row log-sum-exp over the key tiles,
  pass 2 streams the per-tile sums of ``exp(s - lse)``. ``implementation``: None (by platform),
  ``"mosaic_tpu"``, ``"triton"`` (one query tile per program, key tiles streamed; past the
  causal diagonal neither loaded nor computed) or ``"xla"`` (one query block row of scores at a
  time, on every platform). The Pallas kernels run in interpret mode where the platform cannot
  compile them unless ``interpret`` says otherwise; ``num_warps`` and ``num_stages`` tune Triton.
  """
  if q.ndim != 4 or k.ndim != 4 or k.shape[0] != q.shape[0] or k.shape[3] != q.shape[3]:
    raise ShapeError("q/k", (q.shape, k.shape), "[B, Sq, Hq, D] and [B, Sk, Hkv, D]")
  b, sq, hq, d = q.shape
  sk, hkv = k.shape[1], k.shape[2]
  if hq % hkv:
    raise ShapeError("num_kv_heads", hkv, f"a divisor of the {hq} query heads")
  for name, blk in (("block_q", block_q), ("block_k", block_k)):
    if not isinstance(blk, int) or blk <= 0:
      raise ConfigError(name, blk, "a positive int")
  if (q_segment_ids is None) != (kv_segment_ids is None):
    raise ConfigError("segment_ids", "only one of q/kv given", "both or neither")
  if q_segment_ids is not None and (q_segment_ids.shape != (b, sq)
                                    or kv_segment_ids.shape != (b, sk)):
    raise ShapeError("segment_ids", (q_segment_ids.shape, kv_segment_ids.shape),
                     f"[{b}, {sq}] and [{b}, {sk}]")
  impl = backend.resolve(implementation, AVAILABLE)
  spec = AttentionSpec(
      block_q=block_q, block_k=block_k, seq_q=sq, seq_k=sk, num_q_heads=hq, num_kv_heads=hkv,
      num_sel_heads=hq, sel_batch=1, causal=causal, segments=q_segment_ids is not None,
      scale=d ** -0.5 if sm_scale is None else float(sm_scale),
      interpret=backend.interpret_default(impl) if interpret is None else interpret,
      num_warps=num_warps, num_stages=num_stages)
  sqp, skp = math.ceil(sq / block_q) * block_q, math.ceil(sk / block_k) * block_k
  q_seg = kv_seg = None
  if spec.segments:  # padded positions are masked by position, whatever their id
    q_seg = _pad_to(q_segment_ids.astype(jnp.int32), sqp, 1)
    kv_seg = _pad_to(kv_segment_ids.astype(jnp.int32), skp, 1)
  sums = _tile_sums(_pad_to(q, sqp, 1), _pad_to(k, skp, 1), q_seg, kv_seg, spec, impl)
  return tile_means(sums, sq, sk, block_q, block_k, hkv, per_kv_head)


@functools.partial(jax.jit, static_argnums=(4, 5))
def _tile_sums(q, k, q_seg, kv_seg, spec: AttentionSpec, impl: str) -> jax.Array:
  """The backend's tile sums, jit-compiled so that eager calls reuse the compiled kernels."""
  return _TILE_SUMS[impl](q, k, q_seg, kv_seg, spec)
