"""SparseD block-sparse attention for diffusion LLMs with per-head adaptive keep ratios.

SparseD (``INV-WZQ/SparseD``): attention is dense for the first ``skip`` fraction of the sampling
steps; at the switch step ``int(skip * steps)`` each layer computes tile importance (mean attention
probability per (query block, key block), per KV head, ``pallas_kernels.block_importance``) and
keeps, per head and query block, the top ``ceil(keep_h * n_kv_blocks)`` key blocks (``keep_h`` from
:mod:`keep_ratio`, per ``[layer, kv_head]``; SparseD's own rule ``int(n * select) + 1`` is a uniform
keep of ``(int(n * select) + 1) / n``). The masks are reused for every later step, or rebuilt every
``refresh_every`` steps. With ``gen_start`` (isolated selection), the selection over all keys has
its generation-region blocks cleared and those are re-selected among the generation-region blocks
alone (``ceil(keep_h * n_gen_blocks)``), the two ORed.

:class:`SparseDPlan` runs this as separate compiled loops (:mod:`jaxvlm.generation.diffusion`
phases): the dense steps, then cycles of one mask-building step (dense attention + importance)
followed by sparse steps (``pallas_kernels.sparse_attention`` with the per-layer kernel selections
precomputed at the build). With ``cache=`` it composes with the block-wise KV cache
(:mod:`jaxvlm.generation.block_cache`): masks are built at the first cache refresh at or after each
build step, and cached steps attend sparsely over the cached keys (the mask rows of the window's
query blocks). The sampler's ``state`` argument is the keep ratios ``[layers, kv_heads]``, so a new
``select`` or mode reuses the compiled sampler. Padding is not supported in sparse steps (all rows
of a batch have the same length).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvlm.errors import ConfigError
from jaxvlm.generation import block_cache
from jaxvlm.generation.diffusion import (Plan, dense_policy, group_cycles, policy_logits_fn)
from jaxvlm.layers.attention import attention
from pallas_kernels import (BlockSelection, block_importance, blocks_for_ratio,
                            selection_from_block_mask, sparse_attention)


class SparseDState(NamedTuple):
  keep: jax.Array     # [layers, kv_heads] keep ratios
  masks: jax.Array    # [layers, batch, kv_heads, nQ, nK] bool block masks
  indices: jax.Array  # [layers, batch, kv_heads, nQ, nK] int32: the masks as kernel selections
  counts: jax.Array   # [layers, batch, kv_heads, nQ] int32


@dataclasses.dataclass(frozen=True)
class SparseDConfig:
  """Static SparseD settings (the sampler's step count, block size, skip fraction)."""

  steps: int
  block_size: int = 32
  skip: float = 0.2
  gen_start: int | None = None  # first generated position; enables isolated selection
  kernel: str | None = None  # pallas_kernels.sparse_attention implementation (None: by platform)
  refresh_every: int | None = None  # rebuild the masks every R steps after the switch

  def __post_init__(self):
    if not 0.0 <= self.skip < 1.0:
      raise ConfigError("skip", self.skip, "a fraction in [0, 1)")
    if self.block_size <= 0:
      raise ConfigError("block_size", self.block_size, "a positive int")
    if self.refresh_every is not None and (not isinstance(self.refresh_every, int)
                                           or self.refresh_every < 1):
      raise ConfigError("refresh_every", self.refresh_every, "an int >= 1 or None")

  @property
  def switch_step(self) -> int:
    return int(self.skip * self.steps)

  @property
  def build_steps(self) -> list[int]:
    """Steps whose forward pass (dense) builds the masks."""
    return list(range(self.switch_step, self.steps, self.refresh_every or self.steps))


def _topk_blocks(scores: jax.Array, counts: jax.Array, allowed: jax.Array) -> jax.Array:
  """Per row (last axis) the ``counts`` highest-scoring allowed blocks (ties: lower index)."""
  scores = jnp.where(allowed, scores, -jnp.inf)
  ranks = jnp.argsort(jnp.argsort(-scores, axis=-1, stable=True), axis=-1, stable=True)
  return (ranks < counts[..., None]) & allowed


def select_blocks(importance: jax.Array, keep: jax.Array, *,
                  gen_start_block: int | None = None) -> jax.Array:
  """SparseD block mask ``[B, H, nQ, nK]`` from tile importance ``[B, H, nQ, nK]``, keep ``[H]``.

  ``gen_start_block`` (isolated selection): key blocks from it on form the generation region.
  """
  nk = importance.shape[-1]
  keep = jnp.asarray(keep, jnp.float32)[None, :, None]
  count = lambda n: blocks_for_ratio(keep, n)
  all_blocks = jnp.ones((nk,), bool)
  mask = _topk_blocks(importance, jnp.broadcast_to(count(nk), importance.shape[:3]), all_blocks)
  if gen_start_block is None or not 0 < gen_start_block < nk:
    return mask
  gen = jnp.arange(nk) >= gen_start_block
  picked_gen = _topk_blocks(importance, jnp.broadcast_to(count(nk - gen_start_block),
                                                         importance.shape[:3]), gen)
  return (mask & ~gen) | picked_gen


def window_selection(masks: jax.Array, q_start, num_q: int, block: int) -> BlockSelection:
  """Kernel selection for ``num_q`` queries from position ``q_start`` (block masks ``[B, H, nQ,
  nK]``): query tile j keeps the key blocks of every mask row it overlaps."""
  first = q_start + jnp.arange(math.ceil(num_q / block)) * block
  last = jnp.minimum(first + block, q_start + num_q) - 1
  rows = (jnp.take(masks, first // block, axis=2)
          | jnp.take(masks, jnp.minimum(last // block, masks.shape[2] - 1), axis=2))
  return selection_from_block_mask(rows, block, block)


def _build_policy(cfg: SparseDConfig, gen_block: int | None):
  """Dense attention that also selects each layer's blocks from its tile importance."""

  def policy(state: SparseDState, model):
    new = []

    def attend(q, k, v, layer, q_start):
      masks = select_blocks(block_importance(q, k, cfg.block_size, cfg.block_size),
                            state.keep[layer], gen_start_block=gen_block)
      new.append((masks, selection_from_block_mask(masks, cfg.block_size, cfg.block_size)))
      return attention(q, k, v, None, implementation=model.config.attention_impl)[0]

    def finish():
      return state._replace(masks=jnp.stack([m for m, _ in new]),
                            indices=jnp.stack([s.kv_block_indices for _, s in new]),
                            counts=jnp.stack([s.kv_block_counts for _, s in new]))

    return attend, finish

  return policy


def _sparse_policy(cfg: SparseDConfig):
  """Block-sparse attention: the precomputed selection for the whole sequence, the overlapped
  mask rows for a window of queries (a cached step)."""

  def policy(state: SparseDState, model):
    def attend(q, k, v, layer, q_start):
      if q.shape[1] == k.shape[1]:
        sel = BlockSelection(state.indices[layer], state.counts[layer], cfg.block_size,
                             cfg.block_size)
      else:
        sel = window_selection(state.masks[layer], q_start, q.shape[1], cfg.block_size)
      return sparse_attention(q, k, v, sel, implementation=cfg.kernel)

    return attend, lambda: state

  return policy


@dataclasses.dataclass(frozen=True)
class SparseDPlan(Plan):
  """SparseD sampling of an nnx model split as ``graphdef, params``; ``cache``: also the block
  KV cache. The sampler's ``state`` is the keep ratios ``[layers, kv_heads]``."""

  graphdef: nnx.GraphDef
  cfg: SparseDConfig
  cache: block_cache.CacheConfig | None = None

  def phases(self, geom):
    cfg = self.cfg
    if cfg.steps != geom.steps:
      raise ConfigError("SparseDConfig.steps", cfg.steps, f"the sampler's steps ({geom.steps})")
    gen_block = None if cfg.gen_start is None else cfg.gen_start // cfg.block_size
    policies = {"dense": dense_policy(), "build": _build_policy(cfg, gen_block),
                "sparse": _sparse_policy(cfg)}
    builds = cfg.build_steps
    if self.cache is None:
      cycles = [(0, "dense", "dense")] if cfg.switch_step > 0 else []
      cycles += [(b, "build", "sparse") for b in builds]
      fns = {k: policy_logits_fn(self.graphdef, geom, p) for k, p in policies.items()}
      return group_cycles(cycles, geom.steps, fns)
    cycles, built, prev = [], False, -1
    for r in block_cache.refresh_steps(geom, self.cache.refresh_every):
      build = any(prev < b <= r for b in builds)
      kind = "build" if build else "sparse" if built else "dense"
      built |= build
      cycles.append((r, ("refresh", kind), ("window", "sparse" if built else "dense")))
      prev = r
    keys = {c[1] for c in cycles} | {c[2] for c in cycles}
    fns = block_cache.cached_fns(self.graphdef, geom, self.cache.mode, policies, keys)
    return group_cycles(cycles, geom.steps, fns)

  def init_state(self, geom, batch, state, params):
    keep = jnp.asarray(state, jnp.float32)
    n = math.ceil(geom.seq_len / self.cfg.block_size)
    lead = (keep.shape[0], batch, keep.shape[1])
    inner = SparseDState(keep, jnp.ones((*lead, n, n), bool),
                         jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (*lead, n, n)),
                         jnp.full((*lead, n), n, jnp.int32))
    if self.cache is None:
      return inner
    return block_cache.init_cache(params, self.graphdef, geom, batch, inner)


def final_masks(state) -> jax.Array:
  """The block masks of a SparseD run's final state (cached or not)."""
  return (state.inner if isinstance(state, block_cache.CacheState) else state).masks


def attention_flops_saved(masks: jax.Array, cfg: SparseDConfig) -> dict[str, float]:
  """Fraction of attention tiles skipped per sparse step and over the whole run (uncached)."""
  density = float(jnp.mean(masks.astype(jnp.float32)))
  sparse_steps = cfg.steps - cfg.switch_step - len(cfg.build_steps)
  return {"density": density, "saved_per_sparse_step": 1.0 - density,
          "saved_total": (1.0 - density) * sparse_steps / cfg.steps}


def calibrate_head_importance(model: nnx.Module, prompts: jax.Array, block_size: int,
                              select: float = 0.3) -> np.ndarray:
  """Head importance ``[layers, kv_heads]`` from attention statistics on calibration prompts.

  For each head, the attention mass a SparseD selection at uniform ``select`` would drop (1 minus
  the mass of the top ``ceil(select * n)`` key blocks of each query block), averaged over query
  blocks, the query heads of a GQA group and the prompts: heads that lose more under
  sparsification are more important to keep dense.
  """
  cfg = model.config
  group = cfg.num_attention_heads // cfg.num_key_value_heads
  tiles = []  # per layer [B, Hq, n, n] mean probability per tile, no [S, S] array

  def record(q, k, v, mask, layer):
    tiles.append(block_importance(q, k, block_size, block_size, per_kv_head=False))
    return attention(q, k, v, None, implementation=cfg.attention_impl)[0]

  model(jnp.asarray(prompts), attention_fn=record)
  scores = []
  for mean in tiles:
    b, h, n, _ = mean.shape
    s = prompts.shape[1]
    cols = jnp.minimum(block_size, s - jnp.arange(n) * block_size)
    k = int(blocks_for_ratio(select, n))
    kept = jax.lax.top_k(mean * cols, k)[0].sum(-1)  # mean retained mass per query row
    scores.append((1.0 - kept).reshape(b, cfg.num_key_value_heads, group, n).mean(axis=(0, 2, 3)))
  return np.asarray(jnp.stack(scores), np.float64)
