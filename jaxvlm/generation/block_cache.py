"""Block-wise approximate KV cache for the diffusion samplers (Fast-dLLM, arXiv 2505.22618).

Keys and values of the prompt and of finished blocks barely change from one step to the next
(Fast-dLLM measures cosine similarity near 1), so they are computed once per block and reused. A
*refresh* step runs the whole sequence, gives the step's logits and caches every layer's K/V (after
RoPE); the block's other steps run only a window of tokens, whose queries attend to the cached keys
with the window's own keys and values computed fresh:

  * ``prefix``: fresh K/V for the current block and everything after it (the masked suffix);
    cached for the prompt and the finished blocks. The window is the whole generation region so
    that shapes stay static; rows of finished blocks are computed but their keys come from the
    cache, so they change nothing.
  * ``dual`` (DualCache): fresh K/V for the current block only; the masked suffix is cached too.

Refreshes happen at the first step of every block and, with ``refresh_every=R``, every ``R`` steps
within a block (``R = 1``: every step, which is the exact sampler). Attention is a
:data:`jaxvlm.generation.diffusion.Policy`, so the same cache serves dense and sparse attention
(:class:`jaxvlm.methods.sparse_dllm.sparsed.SparseDPlan` with ``cache=``). Batch rows must share
one length (no padding).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvlm.errors import ConfigError
from jaxvlm.generation.diffusion import (Geometry, LogitsFn, Plan, Policy, dense_policy,
                                         forward_rows, group_cycles)
from jaxvlm.models.llama.modeling import as_dtype

MODES = ("prefix", "dual")


class CacheState(NamedTuple):
  k: jax.Array  # [layers, B, L, Hkv, D] keys after RoPE, from the last refresh
  v: jax.Array  # [layers, B, L, Hkv, D]
  inner: Any    # the attention policy's state (e.g. SparseD masks)


@dataclasses.dataclass(frozen=True)
class CacheConfig:
  """``mode``: ``prefix`` | ``dual``; ``refresh_every``: also refresh every R steps in a block."""

  mode: str = "dual"
  refresh_every: int | None = None

  def __post_init__(self):
    if self.mode not in MODES:
      raise ConfigError("cache.mode", self.mode, f"one of {MODES}")
    if self.refresh_every is not None and (not isinstance(self.refresh_every, int)
                                           or self.refresh_every < 1):
      raise ConfigError("refresh_every", self.refresh_every, "an int >= 1 or None")


def refresh_steps(geom: Geometry, refresh_every: int | None) -> list[int]:
  """Steps that run a full forward pass: each block's first step, then every R steps."""
  spb = geom.steps_per_block
  return [b * spb + r for b in range(geom.num_blocks) for r in range(0, spb, refresh_every or spb)]


def init_cache(params: Any, graphdef: nnx.GraphDef, geom: Geometry, batch: int,
               inner: Any) -> CacheState:
  """Zero K/V buffers for the model's layers, KV heads and compute dtype."""
  cfg = nnx.merge(graphdef, params).config
  shape = (cfg.num_hidden_layers, batch, geom.seq_len, cfg.num_key_value_heads, cfg.head_dim)
  zeros = jnp.zeros(shape, as_dtype(cfg.dtype))
  return CacheState(zeros, zeros, inner)


def refresh_fn(graphdef: nnx.GraphDef, geom: Geometry, policy: Policy) -> LogitsFn:
  """Full forward pass: the step's logits and a new cache of every layer's K/V."""

  def fn(params, tokens, state: CacheState, step):
    model = nnx.merge(graphdef, params)
    attend, finish = policy(state.inner, model)
    ks, vs = [], []

    def capture(q, k, v, layer, q_start):
      ks.append(k.astype(state.k.dtype))
      vs.append(v.astype(state.v.dtype))
      return attend(q, k, v, layer, q_start)

    logits = forward_rows(model, tokens, geom.row_start(step), capture,
                          num_rows=geom.block_length)
    return logits, CacheState(jnp.stack(ks), jnp.stack(vs), finish())

  return fn


def window(geom: Geometry, mode: str, step) -> tuple[Any, int]:
  """(first position, length) of the tokens a cached step runs."""
  if mode == "dual":
    return geom.block_start(step) - geom.shift, geom.block_length + geom.shift
  return geom.prompt_len - geom.shift, geom.gen_length + geom.shift


def window_fn(graphdef: nnx.GraphDef, geom: Geometry, mode: str, policy: Policy) -> LogitsFn:
  """Cached step: the window's queries over cached K/V, fresh from the current block on."""

  def fn(params, tokens, state: CacheState, step):
    model = nnx.merge(graphdef, params)
    attend, finish = policy(state.inner, model)
    start, length = window(geom, mode, step)
    fresh = (start + jnp.arange(length) >= geom.block_start(step))[None, :, None, None]

    def merged(cache, new):
      old = jax.lax.dynamic_slice_in_dim(cache, start, length, 1)
      return jax.lax.dynamic_update_slice_in_dim(
          cache, jnp.where(fresh, new.astype(cache.dtype), old), start, 1)

    def cached_attend(q, k, v, layer, q_start):
      return attend(q, merged(state.k[layer], k), merged(state.v[layer], v), layer, q_start)

    tokens = jax.lax.dynamic_slice_in_dim(tokens, start, length, 1)
    logits = forward_rows(model, tokens, geom.row_start(step) - start, cached_attend,
                          q_start=start, num_rows=geom.block_length)
    return logits, state._replace(inner=finish())

  return fn


def cached_fns(graphdef: nnx.GraphDef, geom: Geometry, mode: str, policies: dict[str, Policy],
               keys) -> dict:
  """Logits functions for cycle keys ``("refresh" | "window", policy name)``."""
  make = {"refresh": refresh_fn,
          "window": lambda g, gm, p: window_fn(g, gm, mode, p)}
  return {key: make[key[0]](graphdef, geom, policies[key[1]]) for key in keys}


@dataclasses.dataclass(frozen=True)
class CachedPlan(Plan):
  """Dense attention with the block-wise KV cache (``cache``); state: :class:`CacheState`."""

  graphdef: nnx.GraphDef
  cache: CacheConfig = CacheConfig()
  attention_impl: str | None = None

  def phases(self, geom):
    cycles = [(s, ("refresh", "dense"), ("window", "dense"))
              for s in refresh_steps(geom, self.cache.refresh_every)]
    fns = cached_fns(self.graphdef, geom, self.cache.mode,
                     {"dense": dense_policy(self.attention_impl)},
                     {("refresh", "dense"), ("window", "dense")})
    return group_cycles(cycles, geom.steps, fns)

  def init_state(self, geom, batch, state, params):
    return init_cache(params, self.graphdef, geom, batch, state)
