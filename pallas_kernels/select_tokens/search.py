"""In-kernel exact top-k threshold search shared by the Pallas backends.

Scores map to int32 keys whose signed order is the float order; a bitwise search (compares
and counts, no sort) finds the k-th largest key ``T`` of each row. Then the row keeps every key
``> T`` and the first ``k - #(> T)`` keys equal to ``T`` (ties by lower index).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def sortable_key(scores: jax.Array) -> jax.Array:
  """int32 keys with ``key(a) < key(b)`` iff ``a < b`` for non-NaN float32 (``-0 == +0``)."""
  x = scores.astype(jnp.float32)
  bits = lax.bitcast_convert_type(jnp.where(x == 0.0, 0.0, x), jnp.int32)
  return jnp.where(bits < 0, bits ^ _int32(0x7FFFFFFF), bits)


def _int32(value: int) -> jnp.ndarray:
  """A 32-bit pattern as an int32 constant."""
  return jnp.int32(value - (1 << 32) if value >= 1 << 31 else value)


def kth_largest_key(key: jax.Array, k: jax.Array, radix_bits: int = 1) -> jax.Array:
  """Per row of ``key [R, N]``, the largest ``T`` with ``#(key >= T) >= k`` (``k [R, 1]``).

  ``T`` is built from the top bit down, ``radix_bits`` bits per step: each step counts the
  keys at or above ``2**radix_bits`` candidates in one reduction (fewer, wider steps).
  """
  if 32 % radix_bits:
    raise ValueError(f"radix_bits: got {radix_bits}, expected a divisor of 32")
  found = jnp.zeros(k.shape, jnp.int32)  # T ^ INT_MIN, i.e. T as an unsigned pattern
  for shift in range(32 - radix_bits, -1, -radix_bits):
    if radix_bits == 1:  # scalar constants only: the form Mosaic TPU lowers
      trial = (found | _int32(1 << shift)) ^ _int32(1 << 31)
      count = jnp.sum((key >= trial).astype(jnp.int32), axis=-1, keepdims=True)
      found = jnp.where(count >= k, found | _int32(1 << shift), found)
      continue
    # Digit 0 always qualifies; it keeps the candidate count a power of two (Triton needs it).
    digits = jnp.arange(1 << radix_bits, dtype=jnp.int32)
    trials = (found | (digits << shift)) ^ _int32(1 << 31)  # [R, 2**bits] signed keys
    counts = jnp.sum((key[:, None, :] >= trials[:, :, None]).astype(jnp.int32), axis=-1)
    digit = jnp.sum((counts >= k).astype(jnp.int32), axis=-1, keepdims=True) - 1
    found = found | (digit << shift)
  return found ^ _int32(1 << 31)


def threshold(key: jax.Array, k: jax.Array,
              radix_bits: int = 1) -> tuple[jax.Array, jax.Array]:
  """``(T, ties)``: the k-th largest key and how many keys equal to it are kept."""
  t = kth_largest_key(key, k, radix_bits)
  above = jnp.sum((key > t).astype(jnp.int32), axis=-1, keepdims=True)
  return t, k - above


def keep_mask(key: jax.Array, t: jax.Array, ties: jax.Array, cumsum) -> jax.Array:
  """Bool mask of the kept keys given ``threshold``'s result (``cumsum``: inclusive, axis -1)."""
  eq = (key == t).astype(jnp.int32)
  return (key > t) | ((eq > 0) & (cumsum(eq) - eq < ties))


def running_keep(key: jax.Array, t: jax.Array, ties: jax.Array,
                 before: tuple[jax.Array, jax.Array], cumsum):
  """``keep_mask`` for one segment ``key [S]`` of a row scanned in order (``S < 2**15``).

  ``before = (#(key > t), #(key == t))`` over the row's earlier segments. Returns the keep
  mask, the inclusive count of kept keys in the row so far, and ``before`` for the next
  segment. One scan: both counts travel packed in one int32 (greater-than count high).
  """
  gt_before, eq_before = before
  gt, eq = key > t, key == t
  packed = gt.astype(jnp.int32) << 16 | eq.astype(jnp.int32)
  run, total = cumsum(packed), jnp.sum(packed)
  eq_upto = eq_before + (run & 0xFFFF)
  keep = gt | (eq & (eq_upto <= ties))
  kept_upto = gt_before + (run >> 16) + jnp.minimum(eq_upto, ties)
  return keep, kept_upto, (gt_before + (total >> 16), eq_before + (total & 0xFFFF))
