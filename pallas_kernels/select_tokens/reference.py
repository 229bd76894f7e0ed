"""Pure-JAX token selection: defines what every ``select_tokens`` kernel computes.

Row ``b`` keeps its ``k_b`` highest-scoring tokens (exact top-k; equal scores: the lower index
wins; ``-0.0 == 0.0``; NaN scores are not supported). Kept indices come back in ascending
(original) order, padded to ``max_k`` with -1; gathered features are padded with zeros.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class TokenSelection(NamedTuple):
  """``indices [B, K]`` int32 ascending (-1 = pad), ``features [B, K, D]``, ``counts [B]``."""
  indices: jax.Array
  features: jax.Array
  counts: jax.Array


def gather_rows(features: jax.Array, indices: jax.Array) -> jax.Array:
  """``features[b, indices[b]]`` with zero rows where ``indices`` is -1."""
  rows = jnp.take_along_axis(features, jnp.maximum(indices, 0)[..., None], axis=1)
  return jnp.where(indices[..., None] >= 0, rows, 0).astype(features.dtype)


def select_tokens_reference(scores: jax.Array, features: jax.Array, counts: jax.Array,
                            max_k: int) -> TokenSelection:
  """``scores [B, N]``, ``features [B, N, D]``, per-row ``counts [B]`` (<= ``max_k``)."""
  n = scores.shape[1]
  counts = jnp.asarray(counts, jnp.int32)
  order = jnp.argsort(-(scores.astype(jnp.float32) + 0.0), axis=1, stable=True)[:, :max_k]
  valid = jnp.arange(max_k) < counts[:, None]
  indices = jnp.sort(jnp.where(valid, order, n), axis=1)
  indices = jnp.where(indices < n, indices, -1).astype(jnp.int32)
  return TokenSelection(indices, gather_rows(features, indices), counts)
