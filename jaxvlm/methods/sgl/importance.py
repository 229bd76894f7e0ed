"""Guide importance: attention of the query tokens onto the visual tokens, summed over layers,
heads and queries (SGL), and the top-``int(N * prune_ratio)`` selection through select_tokens."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import pallas_kernels
from jaxvlm.errors import ConfigError


def importance_from_attentions(attentions, query_mask, visual_mask) -> jnp.ndarray:
  """``[B, N]``: sum over layers, heads and ``query_mask`` rows of the probabilities
  (``attentions``: per layer ``[B, H, S, S]``) on the ``visual_mask`` columns (N per row)."""
  q = jnp.asarray(query_mask, jnp.float32)
  mass = sum(jnp.einsum("bhqk,bq->bk", a.astype(jnp.float32), q) for a in attentions)
  v_idx = jnp.argsort(~jnp.asarray(visual_mask, bool), axis=1, stable=True)
  n = int(np.asarray(visual_mask).sum(1).max())
  return jnp.take_along_axis(mass, v_idx[:, :n], axis=1)


def num_kept(n: int, prune_ratio: float) -> int:
  """``int(n * prune_ratio)`` visual tokens kept; ``prune_ratio`` must lie in (0, 1]."""
  if not 0.0 < prune_ratio <= 1.0:
    raise ConfigError("prune_ratio", prune_ratio, "a value in (0, 1]")
  return int(n * prune_ratio)


def prune_layer_index(num_layers: int, prune_layer: float) -> int:
  """``int(L * prune_layer)``; ``prune_layer`` must lie in [0, 1)."""
  if not 0.0 <= prune_layer < 1.0:
    raise ConfigError("prune_layer", prune_layer, "a value in [0, 1)")
  return int(num_layers * prune_layer)


def select_visual(importance, prune_ratio: float) -> jnp.ndarray:
  """Indices ``[B, K]`` (ascending) of the ``K = int(N * prune_ratio)`` most important tokens."""
  imp = jnp.asarray(importance, jnp.float32)
  k = num_kept(imp.shape[1], prune_ratio)
  return pallas_kernels.select_tokens(imp, imp[..., None], k).indices
