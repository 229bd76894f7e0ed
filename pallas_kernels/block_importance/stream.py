"""Per-tile math shared by the streaming backends (base-2 scores ``s * scale * log2(e)``).

Pass 1 folds key tiles into a running row max ``m`` and sum ``l`` (``[bq, 1]`` float32) to get
the row log-sum-exp; pass 2 turns each tile's scores into probabilities ``exp2(s - lse2)`` and
sums them. A row with no allowed key keeps ``l = 0``; its ``lse2`` is ``+inf`` so that its
probabilities are 0.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from pallas_kernels.sparse_attention.tile import NEG_INF


def num_key_tiles(qi, spec, nk: int):
  """Key tiles query block ``qi`` sees: all ``nk``, or those up to the diagonal when causal."""
  if not spec.causal:
    return nk
  return jnp.minimum(nk, lax.div((qi + 1) * spec.block_q + spec.block_k - 1, spec.block_k))


def and_masks(*masks):
  """Logical and of the non-None masks (None when all are None)."""
  out = None
  for m in masks:
    if m is not None:
      out = m if out is None else jnp.logical_and(out, m)
  return out


def lse_step(s, mask, m, l):
  """Folds one tile of base-2 scores ``s [bq, bk]`` into the running ``(m, l)``."""
  if mask is not None:
    s = jnp.where(mask, s, NEG_INF)
  m_new = jnp.maximum(m, jnp.max(s, axis=-1, keepdims=True))
  m_safe = m_new if mask is None else jnp.where(m_new == NEG_INF, 0.0, m_new)
  l = jnp.exp2(m - m_safe) * l + jnp.sum(jnp.exp2(s - m_safe), axis=-1, keepdims=True)
  return m_new, l


def lse2(m, l):
  """Base-2 row log-sum-exp; ``+inf`` for empty rows."""
  return jnp.where(l == 0.0, jnp.inf, m + jnp.log2(jnp.where(l == 0.0, 1.0, l)))


def probabilities(s, mask, lse):
  """One tile's attention probabilities from its base-2 scores and the rows' ``lse2``."""
  p = jnp.exp2(s - lse)
  return p if mask is None else jnp.where(mask, p, 0.0)
