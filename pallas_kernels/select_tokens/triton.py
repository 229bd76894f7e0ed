"""GPU kernels (Pallas Triton) for ``select_tokens``.

Fused (default): ``_fused_kernel``, one program per (row, feature column chunk). Each program
runs its row's threshold search (the row's scores are small), then streams the row in token
blocks: tie-broken keep mask and output slots from running counts (one scan per block),
masked loads of the kept feature rows only, and a scatter of them (and zero pads) to their
slots; the column-chunk-0 program also writes the indices. Every SM gets work, and the search
of some programs overlaps the memory traffic of others. Dense variant (``dense_rows``): the
token pass writes only the indices; after a block barrier the program gathers its columns
of the kept rows slot block by slot block (no masked-off lanes in the feature tiles).

Two kernels (``fused=False``):
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
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from pallas_kernels.errors import ShapeError
from pallas_kernels.select_tokens import search
from pallas_kernels.select_tokens.reference import gather_rows


def _padded_scores(scores):
  """Scores as float32 with N padded to a power of two by ``-inf`` (never kept: ``k <= N``)."""
  n = scores.shape[1]
  return jnp.pad(scores.astype(jnp.float32), ((0, 0), (0, pl.next_power_of_2(n) - n)),
                 constant_values=-jnp.inf)


def _fused_kernel(k_ref, scores_ref, feats_ref, idx_ref, out_ref, *, d: int, max_k: int,
                  rows: int, d_chunk: int, radix_bits: int, dense_rows: int | None,
                  interpret: bool):
  """Program (row, column chunk) of ``fused_select`` on flat per-row feature refs."""
  n_pad = scores_ref.shape[0]
  k = k_ref[pl.program_id(0)]
  chunk = pl.program_id(1)
  t, ties = search.threshold(search.sortable_key(scores_ref[...])[None, :],
                             jnp.full((1, 1), k, jnp.int32), radix_bits)
  t, ties = t.reshape(()), ties.reshape(())
  cols = chunk * d_chunk + lax.iota(jnp.int32, d_chunk)[None, :]

  def token_block(i, carry):
    before, scores = carry
    start = pl.multiple_of(i * rows, rows)
    nxt = pl.multiple_of(jnp.minimum(start + rows, n_pad - rows), rows)
    scores_next = scores_ref[pl.ds(nxt, rows)]  # prefetch: used by the next step
    keep, kept_upto, before = search.running_keep(search.sortable_key(scores), t, ties, before,
                                                  lambda x: jnp.cumsum(x, axis=-1))
    token = start + lax.iota(jnp.int32, rows)
    pad_rank = k + token - kept_upto  # as in _index_kernel: unkept tokens write the pads
    write = keep | (pad_rank < max_k)
    # Lanes that write nothing point past the end (interpret mode drops them; none alias).
    slot = jnp.where(keep, kept_upto - 1, jnp.where(write, pad_rank, max_k))
    if dense_rows is None:
      feats = pltriton.load(feats_ref.at[token[:, None] * d + cols], mask=keep[:, None],
                            other=0)
      pltriton.store(out_ref.at[slot[:, None] * d + cols], feats, mask=write[:, None])
      write &= chunk == 0
    # Dense mode: every program writes (identical) indices, which it then reads back.
    pltriton.store(idx_ref.at[slot], jnp.where(keep, token, -1), mask=write)
    return before, scores_next

  zero = jnp.int32(0)
  lax.fori_loop(0, n_pad // rows, token_block, ((zero, zero), scores_ref[pl.ds(0, rows)]))
  if dense_rows is None:
    return
  if not interpret:  # programs run one after another there
    pltriton.debug_barrier()  # this program's index stores are visible to all its threads

  def tokens_at(j):
    """Kept tokens of slot block ``j`` (-1: pad or past ``max_k``)."""
    slot = j * dense_rows + lax.iota(jnp.int32, dense_rows)
    return pltriton.load(idx_ref.at[jnp.minimum(slot, max_k - 1)], mask=slot < max_k, other=-1)

  def slot_block(j, token):
    token_next = tokens_at(j + 1)  # prefetch: used by the next step
    slot = j * dense_rows + lax.iota(jnp.int32, dense_rows)
    valid = slot < max_k
    feats = pltriton.load(feats_ref.at[jnp.maximum(token, 0)[:, None] * d + cols],
                          mask=(token >= 0)[:, None], other=0)
    pltriton.store(out_ref.at[jnp.where(valid, slot, max_k)[:, None] * d + cols], feats,
                   mask=valid[:, None])
    return token_next

  lax.fori_loop(0, pl.cdiv(max_k, dense_rows), slot_block, tokens_at(0))


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


def indices(scores, counts, max_k: int, *, interpret: bool, num_warps: int = 4,
            radix_bits: int = 1):
  """Kept indices ``[B, max_k]`` (ascending, -1 pads); N padded to a power of two."""
  b, n = scores.shape
  scores = _padded_scores(scores)
  n_pad = scores.shape[1]
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


def fused_select(scores, features, counts, max_k: int, *, interpret: bool, rows: int = 128,
                 d_chunk: int = 256, num_warps: int = 8, num_stages: int = 1,
                 radix_bits: int = 1, dense_rows: int | None = None):
  """``(indices [B, max_k], features [B, max_k, D])`` in one kernel (``_fused_kernel``).

  ``rows``: tokens per streamed block (power of two, < 2**15); ``d_chunk``: feature columns
  per program (power of two; the largest power of two dividing ``D`` if smaller).
  ``dense_rows``: None streams masked loads of the kept rows with the token blocks; an int
  (power of two) first writes the row's indices, then gathers ``dense_rows`` slots per step
  (dense tiles, the index pass is pure latency).
  """
  b, n, d = features.shape
  if n * d >= 2**31:
    raise ShapeError("features", features.shape, "N * D < 2**31 (int32 offsets in a row)")
  scores = _padded_scores(scores)
  n_pad = scores.shape[1]
  rows = min(rows, n_pad, 1 << 14)
  d_chunk = min(d_chunk, d & -d)
  kernel = functools.partial(_fused_kernel, d=d, max_k=max_k, rows=rows, d_chunk=d_chunk,
                             radix_bits=radix_bits, dense_rows=dense_rows,
                             interpret=interpret)
  idx, out = pl.pallas_call(
      kernel,
      grid=(b, d // d_chunk),
      in_specs=[pl.BlockSpec((b,), lambda i, j: (0,)),
                pl.BlockSpec((None, n_pad), lambda i, j: (i, 0)),
                pl.BlockSpec((None, n * d), lambda i, j: (i, 0))],
      out_specs=[pl.BlockSpec((None, max_k), lambda i, j: (i, 0)),
                 pl.BlockSpec((None, max_k * d), lambda i, j: (i, 0))],
      out_shape=[jax.ShapeDtypeStruct((b, max_k), jnp.int32),
                 jax.ShapeDtypeStruct((b, max_k * d), features.dtype)],
      compiler_params=pltriton.CompilerParams(num_warps=num_warps, num_stages=num_stages),
      interpret=interpret,
      name="select_tokens_fused",
  )(counts, scores, features.reshape(b, n * d))
  return idx, out.reshape(b, max_k, d)


def two_kernel_select(scores, features, counts, max_k: int, *, interpret: bool,
                      radix_bits: int = 1, index_warps: int = 4, rows: int = 64,
                      gather_warps: int = 8):
  """``(indices, features)`` by ``indices`` then ``gather`` (an XLA gather if ``D`` is not a
  power of two)."""
  idx = indices(scores, counts, max_k, interpret=interpret, num_warps=index_warps,
                radix_bits=radix_bits)
  d = features.shape[-1]
  if d & (d - 1):
    return idx, gather_rows(features, idx)
  return idx, gather(features, idx, interpret=interpret, rows=rows, num_warps=gather_warps)


def select(scores, features, counts, max_k: int, *, interpret: bool, fused: bool = True,
           **tuning):
  """``(indices, features)`` of ``select_tokens`` by ``fused_select`` (default) or
  ``two_kernel_select``; ``tuning``: that function's keyword parameters."""
  impl = fused_select if fused else two_kernel_select
  return impl(scores, features, counts, max_k, interpret=interpret, **tuning)
