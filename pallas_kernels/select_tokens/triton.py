"""GPU kernels (Pallas Triton) for ``select_tokens``.

1. ``_index_kernel`` (one program per row): threshold search, tie-broken keep mask, positions
   by ``cumsum`` and one scatter that writes every output slot once (kept indices, then -1
   pads; other tokens write to spare slots past ``max_k``): one pass over the scores, no sort.
2. ``_gather_kernel`` (programs over row x slot chunks): loads the chosen feature rows by
   pointer gather and writes them contiguously.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from pallas_kernels.select_tokens import search


def _index_kernel(k_ref, scores_ref, idx_ref, *, max_k: int, radix_bits: int):
  key = search.sortable_key(scores_ref[...])[None, :]
  k = jnp.full((1, 1), k_ref[pl.program_id(0)], jnp.int32)
  t, ties = search.threshold(key, k, radix_bits)
  keep = search.keep_mask(key, t, ties, lambda x: jnp.cumsum(x, axis=-1))[0]
  iota = jnp.arange(keep.shape[0], dtype=jnp.int32)
  kept_upto = jnp.cumsum(keep.astype(jnp.int32))
  # Kept token -> its slot; the first unkept tokens write the -1 pads after the last kept
  # slot (there are enough since max_k <= N); each other token has its own spare slot
  # (stores to one shared address would serialise).
  pad_rank = k[0, 0] + iota - kept_upto
  pad_slot = jnp.where(pad_rank < max_k, pad_rank, max_k + iota)
  idx_ref[jnp.where(keep, kept_upto - 1, pad_slot)] = jnp.where(keep, iota, -1)


def _gather_kernel(idx_ref, feats_ref, out_ref):
  idx = idx_ref[...]
  rows = feats_ref[jnp.maximum(idx, 0), :]
  out_ref[...] = jnp.where(idx[:, None] >= 0, rows, 0).astype(out_ref.dtype)


def indices(scores, counts, max_k: int, *, interpret: bool, num_warps: int = 8,
            radix_bits: int = 2):
  """Kept indices ``[B, max_k]`` (ascending, -1 pads); N padded to a power of two."""
  b, n = scores.shape
  n_pad = pl.next_power_of_2(n)
  scores = jnp.pad(scores.astype(jnp.float32), ((0, 0), (0, n_pad - n)),
                   constant_values=-jnp.inf)
  out = pl.pallas_call(
      functools.partial(_index_kernel, max_k=max_k, radix_bits=radix_bits),
      grid=(b,),
      in_specs=[pl.BlockSpec((b,), lambda i: (0,)),
                pl.BlockSpec((None, n_pad), lambda i: (i, 0))],
      out_specs=pl.BlockSpec((None, max_k + n_pad), lambda i: (i, 0)),
      out_shape=jax.ShapeDtypeStruct((b, max_k + n_pad), jnp.int32),
      compiler_params=pltriton.CompilerParams(num_warps=num_warps, num_stages=1),
      interpret=interpret,
      name="select_tokens_indices",
  )(counts, scores)
  return out[:, :max_k]


def gather(features, idx, *, interpret: bool, rows: int = 64, num_warps: int = 8):
  """``features[b, idx[b]]`` (zero rows for -1); ``D`` must be a power of two."""
  b, n, d = features.shape
  k = idx.shape[1]
  k_pad = -(-k // rows) * rows
  idx = jnp.pad(idx, ((0, 0), (0, k_pad - k)), constant_values=-1)
  out = pl.pallas_call(
      _gather_kernel,
      grid=(b, k_pad // rows),
      in_specs=[pl.BlockSpec((None, rows), lambda i, j: (i, j)),
                pl.BlockSpec((None, n, d), lambda i, j: (i, 0, 0))],
      out_specs=pl.BlockSpec((None, rows, d), lambda i, j: (i, j, 0)),
      out_shape=jax.ShapeDtypeStruct((b, k_pad, d), features.dtype),
      compiler_params=pltriton.CompilerParams(num_warps=num_warps, num_stages=1),
      interpret=interpret,
      name="select_tokens_gather",
  )(idx, features)
  return out[:, :k]
