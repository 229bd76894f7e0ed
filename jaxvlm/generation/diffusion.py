"""Samplers of masked-diffusion LLMs: LLaDA (``ML-GSAI/LLaDA`` generate.py) and Dream
(``Dream-org/Dream`` generation_utils.py), each one jit-compiled ``lax.fori_loop`` over steps.

Both run a *logits function* ``fn(params, tokens [B, L], state, step) -> (logits [B, L, V], state)``
so that a model can carry per-run state across steps (the sparse-attention block masks of
:mod:`jaxvlm.methods.sparse_dllm`); :func:`stateless` adapts ``fn(params, tokens) -> logits``.

Decisions where the references leave room:
  * Gumbel noise: LLaDA computes ``exp(l) / (-log U)**T`` in float64 and takes the argmax. Its log
    is ``l + T * g`` with ``g = -log(-log U)`` a standard Gumbel sample, and log is monotone, so
    the argmax is the same; we compute that form in float32, which never overflows ``exp``.
  * LLaDA confidence is ``-inf`` outside the current block (the reference masks only what lies
    after it; before it nothing is masked, so the two agree unless a prompt holds mask tokens).
  * Dream reveals ``int(n_masked * (1 - s / t))`` per row (the reference uses the batch mean,
    equal when rows hold the same number of masks); sampling with ``alg_temp > 0`` draws without
    replacement through Gumbel-top-k, the same distribution as ``torch.multinomial``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvlm.errors import ConfigError

LogitsFn = Callable[[Any, jax.Array, Any, jax.Array], tuple[jax.Array, Any]]
LLADA_REMASKING = ("low_confidence", "random")
DREAM_ALGS = ("origin", "maskgit_plus", "topk_margin", "entropy")


class DiffusionOutput(NamedTuple):
  tokens: jax.Array           # [B, prompt_len + gen_length]
  transfer_counts: jax.Array  # [steps, B]: tokens unmasked at each step
  state: Any                  # the logits function's final state


def stateless(fn: Callable[[Any, jax.Array], jax.Array]) -> LogitsFn:
  """Adapts ``fn(params, tokens) -> logits`` to the stateful logits-function signature."""
  return lambda params, tokens, state, step: (fn(params, tokens), state)


def llada_schedule(block_length: int, steps_per_block: int) -> np.ndarray:
  """Tokens unmasked at each step of a block: ``masked // steps``, +1 for the first remainder."""
  base, rem = divmod(block_length, steps_per_block)
  return np.array([base + (j < rem) for j in range(steps_per_block)], np.int32)


def dream_schedule(gen_length: int, steps: int, eps: float = 1e-3) -> np.ndarray:
  """Tokens Dream reveals per step (confidence algorithms), as the reference computes them."""
  ts = np.linspace(1.0, eps, steps + 1).astype(np.float32)
  masked, counts = gen_length, []
  for i in range(steps):
    n = masked if i == steps - 1 else int(np.float32(masked) * (np.float32(1) - ts[i + 1] / ts[i]))
    counts.append(n)
    masked -= n
  return np.array(counts, np.int32)


def check_llada_args(gen_length: int, block_length: int, steps: int) -> tuple[int, int]:
  """Returns (num_blocks, steps_per_block) or raises ConfigError naming the bad setting."""
  if gen_length <= 0 or block_length <= 0 or gen_length % block_length:
    raise ConfigError("gen_length", gen_length, f"a positive multiple of block_length={block_length}")
  num_blocks = gen_length // block_length
  if steps <= 0 or steps % num_blocks:
    raise ConfigError("steps", steps, f"a positive multiple of the number of blocks ({num_blocks})")
  return num_blocks, steps // num_blocks


def _top_rank_mask(scores: jax.Array, k: jax.Array) -> jax.Array:
  """True at the ``k`` (per row) largest scores of each row; ties go to the lower index."""
  order = jnp.argsort(-scores, axis=-1, stable=True)
  ranks = jnp.argsort(order, axis=-1, stable=True)
  return ranks < jnp.asarray(k)[..., None]


def llada_generate(logits_fn: LogitsFn, params: Any, prompt: jax.Array, rng: jax.Array, *,
                   steps: int = 128, gen_length: int = 128, block_length: int = 128,
                   temperature: float = 0.0, cfg_scale: float = 0.0,
                   remasking: str = "low_confidence", mask_id: int = 126336,
                   state: Any = ()) -> DiffusionOutput:
  """LLaDA semi-autoregressive sampling: ``gen_length`` masks after ``prompt`` [B, P]."""
  check_llada_args(gen_length, block_length, steps)
  if remasking not in LLADA_REMASKING:
    raise ConfigError("remasking", remasking, f"one of {LLADA_REMASKING}")
  return _llada_jit(logits_fn, params, jnp.asarray(prompt, jnp.int32), rng, state, steps=steps,
                    gen_length=gen_length, block_length=block_length,
                    temperature=float(temperature), cfg_scale=float(cfg_scale),
                    remasking=remasking, mask_id=int(mask_id))


@functools.partial(jax.jit, static_argnames=("logits_fn", "steps", "gen_length", "block_length",
                                             "temperature", "cfg_scale", "remasking", "mask_id"))
def _llada_jit(logits_fn, params, prompt, rng, state, *, steps, gen_length, block_length,
               temperature, cfg_scale, remasking, mask_id):
  batch, prompt_len = prompt.shape
  num_blocks, spb = check_llada_args(gen_length, block_length, steps)
  schedule = jnp.asarray(llada_schedule(block_length, spb))
  x = jnp.concatenate([prompt, jnp.full((batch, gen_length), mask_id, jnp.int32)], axis=1)
  prompt_index = jnp.arange(x.shape[1]) < prompt_len
  pos = jnp.arange(x.shape[1])

  def body(i, carry):
    x, counts, state = carry
    start = prompt_len + (i // spb) * block_length
    in_block = (pos >= start) & (pos < start + block_length)
    mask_index = x == mask_id
    if cfg_scale > 0.0:
      un_x = jnp.where(prompt_index, mask_id, x)
      both, state = logits_fn(params, jnp.concatenate([x, un_x]), state, i)
      cond, un = jnp.split(both.astype(jnp.float32), 2)
      logits = un + (cfg_scale + 1.0) * (cond - un)
    else:
      logits, state = logits_fn(params, x, state, i)
      logits = logits.astype(jnp.float32)
    k_noise, k_rand = jax.random.split(jax.random.fold_in(rng, i))
    noisy = logits
    if temperature > 0.0:
      noisy = logits + temperature * jax.random.gumbel(k_noise, logits.shape, jnp.float32)
    x0 = jnp.argmax(noisy, axis=-1).astype(jnp.int32)
    if remasking == "low_confidence":
      probs = jax.nn.softmax(logits, axis=-1)
      x0_p = jnp.take_along_axis(probs, x0[..., None], axis=-1)[..., 0]
    else:
      x0_p = jax.random.uniform(k_rand, x0.shape)
    conf = jnp.where(mask_index & in_block, x0_p, -jnp.inf)
    transfer = _top_rank_mask(conf, schedule[i % spb]) & mask_index & in_block
    x = jnp.where(transfer, x0, x)
    return x, counts.at[i].set(transfer.sum(-1, dtype=jnp.int32)), state

  counts = jnp.zeros((steps, batch), jnp.int32)
  x, counts, state = jax.lax.fori_loop(0, steps, body, (x, counts, state))
  return DiffusionOutput(x, counts, state)


def _filter_top_p(logits: jax.Array, top_p: float) -> jax.Array:
  """Dream's nucleus filter: drop tokens once the sorted cumulative probability passes top_p."""
  order = jnp.argsort(-logits, axis=-1)
  sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
  cum = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
  remove = jnp.concatenate([jnp.zeros_like(cum[..., :1], bool), (cum > top_p)[..., :-1]], -1)
  remove = jnp.take_along_axis(remove, jnp.argsort(order, axis=-1), axis=-1)
  return jnp.where(remove, jnp.finfo(logits.dtype).min, logits)


def _filter_top_k(logits: jax.Array, top_k: int) -> jax.Array:
  kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
  return jnp.where(logits < kth, jnp.finfo(logits.dtype).min, logits)


def _sample_tokens(logits, key, temperature, top_p, top_k, alg):
  """Dream's ``sample_tokens``: (confidence, token) per position under the chosen alg."""
  if temperature > 0.0:
    logits = logits / temperature
  if top_p is not None and top_p < 1.0:
    logits = _filter_top_p(logits, top_p)
  if top_k is not None:
    logits = _filter_top_k(logits, top_k)
  probs = jax.nn.softmax(logits, axis=-1)
  if temperature > 0.0:
    x0 = jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)
  else:
    x0 = jnp.argmax(probs, axis=-1).astype(jnp.int32)
  conf = jnp.take_along_axis(probs, x0[..., None], axis=-1)[..., 0]
  if alg == "topk_margin":
    top2 = jax.lax.top_k(probs, 2)[0]
    conf = top2[..., 0] - top2[..., 1]
  elif alg == "entropy":
    conf = jnp.sum(probs * jnp.log(probs + 1e-10), axis=-1)
  return conf, x0


def dream_generate(logits_fn: LogitsFn, params: Any, prompt: jax.Array, rng: jax.Array, *,
                   steps: int = 512, gen_length: int = 512, alg: str = "origin",
                   eps: float = 1e-3, temperature: float = 0.0, top_p: float | None = None,
                   top_k: int | None = None, alg_temp: float | None = None,
                   mask_id: int = 151666, state: Any = ()) -> DiffusionOutput:
  """Dream sampling: shifted logits, timesteps ``linspace(1, eps, steps + 1)``, ``alg`` reveal."""
  if alg not in DREAM_ALGS:
    raise ConfigError("alg", alg, f"one of {DREAM_ALGS}")
  if steps <= 0 or gen_length <= 0:
    raise ConfigError("steps", (steps, gen_length), "positive steps and gen_length")
  return _dream_jit(logits_fn, params, jnp.asarray(prompt, jnp.int32), rng, state, steps=steps,
                    gen_length=gen_length, alg=alg, eps=float(eps),
                    temperature=float(temperature), top_p=top_p, top_k=top_k,
                    alg_temp=float(alg_temp or 0.0), mask_id=int(mask_id))


@functools.partial(jax.jit, static_argnames=("logits_fn", "steps", "gen_length", "alg", "eps",
                                             "temperature", "top_p", "top_k", "alg_temp",
                                             "mask_id"))
def _dream_jit(logits_fn, params, prompt, rng, state, *, steps, gen_length, alg, eps,
               temperature, top_p, top_k, alg_temp, mask_id):
  batch = prompt.shape[0]
  x = jnp.concatenate([prompt, jnp.full((batch, gen_length), mask_id, jnp.int32)], axis=1)
  timesteps = jnp.linspace(1.0, eps, steps + 1, dtype=jnp.float32)

  def body(i, carry):
    x, counts, state = carry
    mask_index = x == mask_id
    logits, state = logits_fn(params, x, state, i)
    logits = logits.astype(jnp.float32)
    logits = jnp.concatenate([logits[:, :1], logits[:, :-1]], axis=1)
    t, s = timesteps[i], timesteps[i + 1]
    k_tok, k_pick = jax.random.split(jax.random.fold_in(rng, i))
    conf, x0 = _sample_tokens(logits, k_tok, temperature, top_p, top_k, alg)
    last = i == steps - 1
    if alg == "origin":
      p_transfer = jnp.where(last, 1.0, 1.0 - s / t)
      transfer = mask_index & (jax.random.uniform(k_pick, x.shape) < p_transfer)
    else:
      n_masked = mask_index.sum(-1)
      n = jnp.where(last, n_masked,
                    (n_masked.astype(jnp.float32) * (1.0 - s / t)).astype(jnp.int32))
      scores = jnp.where(mask_index, conf, -jnp.inf)
      if alg_temp > 0.0:
        scores = scores / alg_temp + jax.random.gumbel(k_pick, scores.shape)
      transfer = _top_rank_mask(scores, n) & mask_index
    x = jnp.where(transfer, x0, x)
    return x, counts.at[i].set(transfer.sum(-1, dtype=jnp.int32)), state

  counts = jnp.zeros((steps, batch), jnp.int32)
  x, counts, state = jax.lax.fori_loop(0, steps, body, (x, counts, state))
  return DiffusionOutput(x, counts, state)


def model_logits_fn(graphdef: Any, **call_kwargs) -> LogitsFn:
  """Stateless logits function of an nnx model split as ``graphdef, params = nnx.split(model)``."""
  return stateless(lambda params, tokens: nnx.merge(graphdef, params)(tokens, **call_kwargs).logits)
