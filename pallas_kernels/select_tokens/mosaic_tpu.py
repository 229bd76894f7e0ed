"""Mosaic TPU kernel for ``select_tokens``: the per-row top-k threshold search.

Eight rows per program (the sublane tile); the 32-step search is compares and lane
reductions only. Mosaic has no in-kernel cumsum or vector scatter, so the tie-broken keep mask,
its compaction and the row gather run in XLA on the kernel's ``(T, ties)`` output.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels.select_tokens import search

ROWS = 8


def _threshold_kernel(k_ref, scores_ref, t_ref, ties_ref):
  t, ties = search.threshold(search.sortable_key(scores_ref[...]), k_ref[...])
  t_ref[...], ties_ref[...] = t, ties


def threshold(scores, counts, *, interpret: bool):
  """Per-row ``(T [B, 1], ties [B, 1])`` of ``search.threshold``."""
  b, n = scores.shape
  b_pad = -(-b // ROWS) * ROWS
  n_pad = -(-n // 128) * 128
  scores = jnp.pad(scores.astype(jnp.float32), ((0, b_pad - b), (0, n_pad - n)),
                   constant_values=-jnp.inf)
  counts = jnp.pad(counts, (0, b_pad - b))[:, None]
  spec = lambda width: pl.BlockSpec((ROWS, width), lambda i: (i, 0))
  t, ties = pl.pallas_call(
      _threshold_kernel,
      grid=(b_pad // ROWS,),
      in_specs=[spec(1), spec(n_pad)],
      out_specs=[spec(1), spec(1)],
      out_shape=[jax.ShapeDtypeStruct((b_pad, 1), jnp.int32)] * 2,
      compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel",)),
      interpret=interpret,
      name="select_tokens_threshold",
  )(counts, scores)
  return t[:b], ties[:b]


def indices(scores, counts, max_k: int, *, interpret: bool):
  """Kept indices ``[B, max_k]`` (ascending, -1 pads)."""
  b, n = scores.shape
  t, ties = threshold(scores, counts, interpret=interpret)
  keep = search.keep_mask(search.sortable_key(scores), t, ties,
                          functools.partial(jnp.cumsum, axis=-1))
  slot = jnp.where(keep, jnp.cumsum(keep, axis=-1) - 1, max_k)
  out = jnp.full((b, max_k + 1), -1, jnp.int32)
  out = out.at[jnp.arange(b)[:, None], slot].set(jnp.arange(n, dtype=jnp.int32))
  return out[:, :max_k]
