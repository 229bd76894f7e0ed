"""In-kernel exact top-k threshold search shared by the Pallas backends.

Scores map to int32 keys whose signed order is the float order; a 32-step bitwise search
(compare + count, no sort) finds the k-th largest key ``T`` of each row. Then the row keeps
every key ``> T`` and the first ``k - #(> T)`` keys equal to ``T`` (ties by lower index).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

INT_MIN = -(2 ** 31)


def sortable_key(scores: jax.Array) -> jax.Array:
  """int32 keys with ``key(a) < key(b)`` iff ``a < b`` for non-NaN float32 (``-0 == +0``)."""
  x = scores.astype(jnp.float32)
  bits = lax.bitcast_convert_type(jnp.where(x == 0.0, 0.0, x), jnp.int32)
  return jnp.where(bits < 0, bits ^ jnp.int32(0x7FFFFFFF), bits)


def kth_largest_key(key: jax.Array, k: jax.Array) -> jax.Array:
  """Per row of ``key [R, N]``, the largest ``T`` with ``#(key >= T) >= k`` (``k [R, 1]``)."""
  found = jnp.zeros(k.shape, jnp.int32)  # T ^ INT_MIN, built from the top bit down
  for bit in range(31, -1, -1):
    trial = found | jnp.int32(INT_MIN if bit == 31 else 1 << bit)
    count = jnp.sum((key >= (trial ^ jnp.int32(INT_MIN))).astype(jnp.int32), axis=-1,
                    keepdims=True)
    found = jnp.where(count >= k, trial, found)
  return found ^ jnp.int32(INT_MIN)


def threshold(key: jax.Array, k: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(T, ties)``: the k-th largest key and how many keys equal to it are kept."""
  t = kth_largest_key(key, k)
  above = jnp.sum((key > t).astype(jnp.int32), axis=-1, keepdims=True)
  return t, k - above


def keep_mask(key: jax.Array, t: jax.Array, ties: jax.Array, cumsum) -> jax.Array:
  """Bool mask of the kept keys given ``threshold``'s result (``cumsum``: inclusive, axis -1)."""
  eq = (key == t).astype(jnp.int32)
  return (key > t) | ((eq > 0) & (cumsum(eq) - eq < ties))
