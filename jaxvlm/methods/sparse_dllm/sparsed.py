"""SparseD block-sparse attention for diffusion LLMs with per-head adaptive keep ratios.

SparseD (``INV-WZQ/SparseD``): attention is dense for the first ``skip`` fraction of the sampling
steps; at the switch step ``int(skip * steps)`` each layer computes tile importance (mean attention
probability per (query block, key block), per KV head) and keeps, per head and query block, the
top ``ceil(keep_h * n_kv_blocks)`` key blocks (``keep_h`` from :mod:`keep_ratio`, per
``[layer, kv_head]``; SparseD's own rule ``int(n * select) + 1`` is a uniform keep of
``(int(n * select) + 1) / n``). The masks are reused for every later step. With ``gen_start``
(isolated selection), the selection over all keys has its generation-region blocks cleared and
those are re-selected among the generation-region blocks alone (``ceil(keep_h * n_gen_blocks)``),
the two ORed.

The keep ratios and block masks (``[layers, batch, kv_heads, nQ, nK]``) are the sampler's carried
state (:class:`SparseDState`), so the whole loop stays one jit-compiled ``fori_loop`` and a new
``select`` or mode reuses the compiled sampler. The model is any decoder taking
``attention_fn(q, k, v, mask, layer_idx)``; dense steps run its own attention implementation,
sparse steps ``pallas_kernels.sparse_attention``.
Padding is not supported in sparse steps (all rows of a batch have the same length).
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
from jaxvlm.layers.attention import attention
from pallas_kernels import (block_importance, blocks_for_ratio, selection_from_block_mask,
                            sparse_attention)


class SparseDState(NamedTuple):
  keep: jax.Array   # [layers, kv_heads] keep ratios
  masks: jax.Array  # [layers, batch, kv_heads, nQ, nK] bool block masks


@dataclasses.dataclass(frozen=True)
class SparseDConfig:
  """Static SparseD settings (the sampler's step count, block size, skip fraction)."""

  steps: int
  block_size: int = 32
  skip: float = 0.2
  gen_start: int | None = None  # first generated position; enables isolated selection
  kernel: str | None = None  # pallas_kernels.sparse_attention implementation (None: by platform)

  def __post_init__(self):
    if not 0.0 <= self.skip < 1.0:
      raise ConfigError("skip", self.skip, "a fraction in [0, 1)")
    if self.block_size <= 0:
      raise ConfigError("block_size", self.block_size, "a positive int")

  @property
  def switch_step(self) -> int:
    return int(self.skip * self.steps)


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


def sparsed_logits_fn(graphdef: nnx.GraphDef, cfg: SparseDConfig):
  """A :mod:`jaxvlm.generation.diffusion` logits function running ``graphdef`` with SparseD.

  ``fn(params, tokens, state, step)``; ``state`` starts as :func:`init_state`.
  """
  switch = cfg.switch_step
  gen_block = None if cfg.gen_start is None else cfg.gen_start // cfg.block_size

  def fn(params, tokens, state: SparseDState, step):
    model = nnx.merge(graphdef, params)
    keep, masks = state

    def run(sparse: bool):
      new = []

      def attn(q, k, v, mask, layer):
        if sparse:
          selection = selection_from_block_mask(masks[layer], cfg.block_size, cfg.block_size)
          return sparse_attention(q, k, v, selection, implementation=cfg.kernel)
        fresh = lambda: select_blocks(block_importance(q, k, cfg.block_size, cfg.block_size),
                                      keep[layer], gen_start_block=gen_block)
        new.append(jax.lax.cond(step == switch, fresh, lambda: masks[layer]))
        return attention(q, k, v, mask, implementation=model.config.attention_impl)[0]

      logits = model(tokens, attention_fn=attn).logits
      return logits, SparseDState(keep, jnp.stack(new) if new else masks)

    return jax.lax.cond(step <= switch, lambda: run(False), lambda: run(True))

  return fn


def init_state(cfg: SparseDConfig, keep, batch: int, seq_len: int) -> SparseDState:
  """Keep ratios ``[layers, kv_heads]`` and all-True block masks (dense until the switch)."""
  keep = jnp.asarray(np.asarray(keep, np.float32))
  n = math.ceil(seq_len / cfg.block_size)
  return SparseDState(keep, jnp.ones((*keep.shape[:1], batch, keep.shape[1], n, n), bool))


def attention_flops_saved(masks: jax.Array, cfg: SparseDConfig) -> dict[str, float]:
  """Fraction of attention tiles skipped per sparse step and over the whole run."""
  density = float(jnp.mean(masks.astype(jnp.float32)))
  sparse_steps = max(cfg.steps - cfg.switch_step - 1, 0)
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
  out = model(jnp.asarray(prompts), output_attentions=True)
  group = cfg.num_attention_heads // cfg.num_key_value_heads
  scores = []
  for probs in out.attentions:  # [B, Hq, S, S]
    b, h, s, _ = probs.shape
    n = math.ceil(s / block_size)
    p = jnp.pad(probs, ((0, 0), (0, 0), (0, n * block_size - s), (0, n * block_size - s)))
    mass = p.reshape(b, h, n, block_size, n, block_size).sum(axis=(3, 5))  # row-summed tiles
    rows = jnp.minimum(block_size, s - jnp.arange(n) * block_size)[:, None]
    k = int(blocks_for_ratio(select, n))
    kept = jax.lax.top_k(mass / rows, k)[0].sum(-1)  # mean retained mass per query row
    scores.append((1.0 - kept).reshape(b, cfg.num_key_value_heads, group, n).mean(axis=(0, 2, 3)))
  return np.asarray(jnp.stack(scores), np.float64)

