"""Block selection for sparse attention: which key blocks each query block attends.

Format (``BlockSelection``): ``kv_block_indices [Bs, Hs, nQ, maxK] int32`` lists, per
(batch, head, query block), the selected key blocks in ascending order; ``kv_block_counts
[Bs, Hs, nQ] int32`` says how many entries are valid. Entries past the count repeat the last
valid index (0 when the count is 0), so a pipelined kernel that walks ``maxK`` steps re-uses the
block already in VMEM instead of fetching a new one (splash attention's "next non-empty block").

``Bs`` is 1 (shared by the batch) or B. ``Hs`` is 1 (shared by all heads), the number of KV
heads (one selection per GQA group: the diffusion-LLM users' per-(layer, kv_head) keep ratios)
or the number of query heads; query head ``h`` uses selection head ``h // (Hq // Hs)``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from pallas_kernels.errors import ConfigError, ShapeError


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BlockSelection:
  """Per (batch|1, head-group, query block) list of key blocks; see the module docstring."""
  kv_block_indices: jax.Array
  kv_block_counts: jax.Array
  block_q: int = dataclasses.field(metadata=dict(static=True))
  block_k: int = dataclasses.field(metadata=dict(static=True))

  @property
  def num_q_blocks(self) -> int:
    return self.kv_block_indices.shape[2]

  @property
  def max_blocks(self) -> int:
    return self.kv_block_indices.shape[3]

  def block_mask(self, num_kv_blocks: int) -> jax.Array:
    """The selection as a bool block mask ``[Bs, Hs, nQ, num_kv_blocks]``."""
    return block_mask_from_indices(self.kv_block_indices, self.kv_block_counts, num_kv_blocks)


def block_mask_from_indices(indices: jax.Array, counts: jax.Array,
                            num_kv_blocks: int) -> jax.Array:
  """Bool ``[Bs, Hs, nQ, num_kv_blocks]`` mask of the first ``counts`` entries of ``indices``."""
  bs, hs, nq, max_k = indices.shape
  valid = (jnp.arange(max_k) < counts[..., None]).astype(jnp.int32)
  mask = jnp.zeros((bs, hs, nq, num_kv_blocks), jnp.int32)
  mask = mask.at[jnp.arange(bs)[:, None, None, None], jnp.arange(hs)[None, :, None, None],
                 jnp.arange(nq)[None, None, :, None], indices].max(valid)
  return mask > 0


def transposed_selection(indices: jax.Array, counts: jax.Array,
                         num_kv_blocks: int) -> tuple[jax.Array, jax.Array]:
  """Per key block, the query blocks that selected it (the dK/dV loop order), same format:
  ``([Bs, Hs, nK, nQ], [Bs, Hs, nK])``."""
  mask = jnp.swapaxes(block_mask_from_indices(indices, counts, num_kv_blocks), 2, 3)
  sel = selection_from_block_mask(mask, 1, 1)
  return sel.kv_block_indices, sel.kv_block_counts


def selection_from_block_mask(block_mask: jax.Array, block_q: int, block_k: int,
                              max_blocks: int | None = None) -> BlockSelection:
  """Selection from a bool ``[Bs, Hs, nQ, nK]`` block mask (True = compute this tile).

  ``max_blocks`` (static) bounds the list length; rows with more selected blocks keep the
  lowest-index ones. Default: ``nK``.
  """
  if block_mask.ndim != 4:
    raise ShapeError("block_mask", block_mask.shape, "a 4-D [Bs, Hs, nQ, nK] bool array")
  num_kv = block_mask.shape[-1]
  max_blocks = num_kv if max_blocks is None else max_blocks
  if not 1 <= max_blocks <= num_kv:
    raise ConfigError("max_blocks", max_blocks, f"an int in [1, {num_kv}]")
  block_mask = block_mask.astype(bool)
  # Stable sort of "not selected" puts the selected indices first, in ascending order.
  order = jnp.argsort(~block_mask, axis=-1, stable=True)[..., :max_blocks].astype(jnp.int32)
  counts = jnp.minimum(jnp.sum(block_mask, axis=-1), max_blocks).astype(jnp.int32)
  last = jnp.take_along_axis(order, jnp.maximum(counts - 1, 0)[..., None], axis=-1)
  last = jnp.where(counts[..., None] > 0, last, 0)
  indices = jnp.where(jnp.arange(max_blocks) < counts[..., None], order, last)
  return BlockSelection(indices, counts, block_q, block_k)


def blocks_for_ratio(keep_ratio: jax.Array, num_kv_blocks: int) -> jax.Array:
  """``k_h = ceil(keep_h * n)`` clipped to ``[1, n]`` (int32), the blocks a keep ratio buys."""
  keep = jnp.asarray(keep_ratio, jnp.float32)
  # Round before the ceil so that e.g. 0.3 * 10 (= 3.0000000000000004) buys 3 blocks.
  k = jnp.ceil(jnp.round(keep * num_kv_blocks, 4))
  return jnp.clip(k, 1, num_kv_blocks).astype(jnp.int32)


def selection_from_scores(block_scores: jax.Array, keep_ratio: jax.Array | float,
                          block_q: int, block_k: int,
                          max_blocks: int | None = None) -> BlockSelection:
  """Top-``k_h`` key blocks per query block by score, ``k_h`` from per-head keep ratios.

  ``block_scores [Bs, Hs, nQ, nK]`` (e.g. ``block_importance``); ``keep_ratio`` a scalar or
  ``[Hs]`` array. Each row keeps exactly ``blocks_for_ratio(keep_h, nK)`` blocks (ties by lower
  block index). SparseD's ``int(n * select) + 1`` is ``keep = (int(n * select) + 1) / n``.
  ``max_blocks`` (static) defaults to ``nK``; pass ``blocks_for_ratio(max(keep), nK)`` to make
  the kernel's step count proportional to the budget.
  """
  if block_scores.ndim != 4:
    raise ShapeError("block_scores", block_scores.shape, "a 4-D [Bs, Hs, nQ, nK] array")
  num_heads, num_kv = block_scores.shape[1], block_scores.shape[-1]
  keep = jnp.asarray(keep_ratio, jnp.float32)
  if keep.ndim not in (0, 1) or (keep.ndim == 1 and keep.shape[0] not in (1, num_heads)):
    raise ShapeError("keep_ratio", keep.shape, f"a scalar or a [{num_heads}] array")
  k = jnp.broadcast_to(blocks_for_ratio(keep, num_kv), (num_heads,))
  rank = jnp.argsort(jnp.argsort(-block_scores.astype(jnp.float32), axis=-1, stable=True),
                     axis=-1)
  mask = rank < k[None, :, None, None]
  return selection_from_block_mask(mask, block_q, block_k, max_blocks)


def dense_selection(num_heads: int, seq_q: int, seq_k: int, block_q: int,
                    block_k: int) -> BlockSelection:
  """Every key block for every query block (``keep_ratio = 1``), shared by the batch."""
  nq, nk = math.ceil(seq_q / block_q), math.ceil(seq_k / block_k)
  return selection_from_block_mask(jnp.ones((1, num_heads, nq, nk), bool), block_q, block_k)

