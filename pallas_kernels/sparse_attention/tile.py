"""In-kernel math shared by the Pallas backends: one tile of online-softmax attention.

Scores live in the base-2 domain (``s * scale * log2(e)``) so the kernels use ``exp2``.
Running max ``m`` and sum ``l`` are ``[bq, 1]`` float32; a query whose allowed keys are all
masked keeps ``m = -inf, l = 0`` and finishes with output 0.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

LOG2E = math.log2(math.e)
NEG_INF = float("-inf")


def tile_mask(rows: jax.Array, cols: jax.Array, *, causal: bool, kv_len: int | None,
              q_seg: jax.Array | None = None, kv_seg: jax.Array | None = None):
  """Allowed (row, col) pairs of a tile from absolute positions ``rows [bq, 1]``, ``cols [1, bk]``.

  ``kv_len``: keys at or past it are padding. Returns None when nothing is masked statically.
  """
  mask = None

  def _and(a, b):
    return b if a is None else jnp.logical_and(a, b)

  if causal:
    mask = _and(mask, rows >= cols)
  if kv_len is not None:
    mask = _and(mask, cols < kv_len)
  if q_seg is not None:
    mask = _and(mask, q_seg == kv_seg)
  return mask


def online_softmax_step(q, k, v, m, l, acc, *, scale: float, mask,
                        dot_qk: Callable, dot_pv: Callable):
  """Folds one key tile into the running ``(m, l, acc)`` of a query tile."""
  s = dot_qk(q, k) * (scale * LOG2E)
  if mask is not None:
    s = jnp.where(mask, s, NEG_INF)
  m_new = jnp.maximum(m, jnp.max(s, axis=-1, keepdims=True))
  # Unmasked scores are finite, so only a mask can leave a row's max at -inf.
  m_safe = m_new if mask is None else jnp.where(m_new == NEG_INF, 0.0, m_new)
  p = jnp.exp2(s - m_safe)
  alpha = jnp.exp2(m - m_safe)
  l = alpha * l + jnp.sum(p, axis=-1, keepdims=True)
  acc = alpha * acc + dot_pv(p.astype(v.dtype), v)
  return m_new, l, acc


def finalize(m, l, acc):
  """Normalised output (0 for empty rows) and natural-log log-sum-exp (``-inf`` when empty)."""
  empty = l == 0.0
  out = acc / jnp.where(empty, 1.0, l)
  lse = jnp.where(empty, NEG_INF, m / LOG2E + jnp.log(jnp.where(empty, 1.0, l)))
  return out, lse


def base2_lse(lse):
  """Log-sum-exp in base 2 for ``exp2`` recompute; ``+inf`` for empty rows so that ``P = 0``."""
  return jnp.where(lse == NEG_INF, jnp.inf, lse * LOG2E)


def tile_grads(q, k, v, do, lse2, delta, *, scale: float, mask, dot_qk: Callable):
  """``P`` and ``dS / scale`` of one (query tile, key tile) from the forward's ``lse2``."""
  p = jnp.exp2(dot_qk(q, k) * (scale * LOG2E) - lse2)
  if mask is not None:
    p = jnp.where(mask, p, 0.0)
  return p, p * (dot_qk(do, v) - delta)
