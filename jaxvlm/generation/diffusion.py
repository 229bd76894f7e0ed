"""Samplers of masked-diffusion LLMs: LLaDA (``ML-GSAI/LLaDA`` generate.py) and Dream
(``Dream-org/Dream`` generation_utils.py), jit-compiled loops over the sampling steps.

A sampler runs a *plan* (:class:`Plan`): phases, each a ``lax.fori_loop`` over a range of steps with
its own logits function ``fn(params, tokens [B, L], state, step) -> (logits, state)``. The dense and
sparse steps of SparseD, or the full refreshes and cached steps of a block-wise KV cache
(:mod:`jaxvlm.generation.block_cache`), thus compile to separate loops: no per-step ``lax.cond``
carries two models. A plain logits function is a one-phase plan (:func:`stateless` adapts
``fn(params, tokens) -> logits``). A logits function returns ``[B, L, V]`` (every position) or
``[B, block_length, V]``: just the rows the step reads (:meth:`Geometry.row_start`).

Block decoding: the ``gen_length`` masks are decoded in blocks of ``block_length``, left to right,
``steps // num_blocks`` steps each (LLaDA; Dream too when ``block_length < gen_length``, running its
timestep schedule within each block as Fast-dLLM's Dream sampler does).

Confidence-threshold parallel decoding (Fast-dLLM, ``threshold``): a step unmasks its scheduled
count (at least one) plus every other masked token of the current block whose confidence is at
least ``threshold``; steps of a block that is already complete run no forward pass. With
``steps == gen_length`` (one token scheduled per step) this is Fast-dLLM's rule: the top token plus
all above the threshold, until the block is done.

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

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvlm.errors import ConfigError, ShapeError
from jaxvlm.layers.attention import attention

LogitsFn = Callable[[Any, jax.Array, Any, jax.Array], tuple[jax.Array, Any]]
# attend(q [B, W, Hq, D], k, v [B, L, Hkv, D], layer, q_start) -> out; q_start: q's first position.
Attend = Callable[[jax.Array, jax.Array, jax.Array, int, Any], jax.Array]
# policy(state, model) -> (attend, finish): finish() gives the state after the forward pass.
Policy = Callable[[Any, nnx.Module], tuple[Attend, Callable[[], Any]]]
LLADA_REMASKING = ("low_confidence", "random")
DREAM_ALGS = ("origin", "maskgit_plus", "topk_margin", "entropy")


class DiffusionOutput(NamedTuple):
  tokens: jax.Array           # [B, prompt_len + gen_length]
  transfer_counts: jax.Array  # [steps, B]: tokens unmasked at each step
  state: Any                  # the plan's final state


@dataclasses.dataclass(frozen=True)
class Geometry:
  """Static layout of one sampling run; ``shift`` 1 for Dream (position i reads output i - 1)."""

  prompt_len: int
  gen_length: int
  block_length: int
  steps: int
  shift: int = 0

  @property
  def seq_len(self) -> int:
    return self.prompt_len + self.gen_length

  @property
  def num_blocks(self) -> int:
    return self.gen_length // self.block_length

  @property
  def steps_per_block(self) -> int:
    return self.steps // self.num_blocks

  def block_start(self, step):
    """First position of the block that ``step`` decodes."""
    return self.prompt_len + (step // self.steps_per_block) * self.block_length

  def row_start(self, step):
    """First of the ``block_length`` output rows that step reads (the block, shifted)."""
    return self.block_start(step) - self.shift

  def take_rows(self, logits: jax.Array, step) -> jax.Array:
    """The step's rows of ``logits`` given for every position or for those rows only."""
    if logits.shape[1] == self.block_length:
      return logits
    if logits.shape[1] != self.seq_len:
      raise ShapeError("logits", logits.shape,
                       f"[B, {self.seq_len} or {self.block_length}, V] rows")
    return jax.lax.dynamic_slice_in_dim(logits, self.row_start(step), self.block_length, 1)


class Phase(NamedTuple):
  """Steps ``starts[0] .. stop - 1`` in cycles: cycle c begins at ``starts[c]`` with ``first``
  (when set) and runs ``fn`` on its other steps, up to the next cycle's start."""

  fn: LogitsFn
  starts: tuple[int, ...]
  stop: int
  first: LogitsFn | None = None


class Plan:
  """How a sampler computes logits: ``phases(geometry)`` and the initial state."""

  def phases(self, geom: Geometry) -> tuple[Phase, ...]:
    raise NotImplementedError

  def init_state(self, geom: Geometry, batch: int, state: Any, params: Any) -> Any:
    """The state the first step sees, from the user's ``state`` (default: it unchanged)."""
    del geom, batch, params
    return state


@dataclasses.dataclass(frozen=True)
class SinglePhase(Plan):
  """One logits function for every step."""

  fn: LogitsFn

  def phases(self, geom):
    return (Phase(self.fn, (0,), geom.steps),)


def group_cycles(cycles: Sequence[tuple[int, Any, Any]], steps: int,
                 fns: dict[Any, LogitsFn]) -> tuple[Phase, ...]:
  """Phases from cycles ``(start, first_key, rest_key)`` in step order (each ends where the next
  begins, the last at ``steps``): consecutive cycles with equal keys share one phase."""
  phases, i = [], 0
  while i < len(cycles):
    j = i
    while j + 1 < len(cycles) and cycles[j + 1][1:] == cycles[i][1:]:
      j += 1
    stop = cycles[j + 1][0] if j + 1 < len(cycles) else steps
    _, first, rest = cycles[i]
    if first == rest:
      phases.append(Phase(fns[rest], (cycles[i][0],), stop))
    else:
      phases.append(Phase(fns[rest], tuple(c[0] for c in cycles[i:j + 1]), stop, fns[first]))
    i = j + 1
  return tuple(phases)


def _run_phases(phases: Sequence[Phase], step: Callable[[LogitsFn], Callable], carry):
  """Runs ``step(fn)(i, carry)`` over each phase's steps, one ``fori_loop`` per phase."""
  for ph in phases:
    if ph.first is None:
      carry = jax.lax.fori_loop(ph.starts[0], ph.stop, step(ph.fn), carry)
      continue
    starts = jnp.asarray(ph.starts, jnp.int32)
    ends = jnp.asarray(ph.starts[1:] + (ph.stop,), jnp.int32)

    def cycle(c, carry, first=step(ph.first), rest=step(ph.fn), starts=starts, ends=ends):
      carry = first(starts[c], carry)
      return jax.lax.fori_loop(starts[c] + 1, ends[c], rest, carry)

    carry = jax.lax.fori_loop(0, len(ph.starts), cycle, carry)
  return carry


def as_plan(logits_fn: LogitsFn | Plan) -> Plan:
  return logits_fn if isinstance(logits_fn, Plan) else SinglePhase(logits_fn)


def stateless(fn: Callable[[Any, jax.Array], jax.Array]) -> LogitsFn:
  """Adapts ``fn(params, tokens) -> logits`` to the stateful logits-function signature."""
  return lambda params, tokens, state, step: (fn(params, tokens), state)


def dense_policy(implementation: str | None = None) -> Policy:
  """Dense attention (``implementation``, default the model's own); the state passes through."""

  def policy(state, model):
    impl = implementation or model.config.attention_impl
    return (lambda q, k, v, layer, q_start: attention(q, k, v, None, implementation=impl)[0],
            lambda: state)

  return policy


def forward_rows(model: nnx.Module, tokens: jax.Array, row_start, attend: Attend, *,
                 q_start=0, num_rows: int) -> jax.Array:
  """float32 logits ``[B, num_rows, V]`` of output rows ``row_start ..`` (indices into ``tokens``)
  of a bidirectional decoder whose attention is ``attend``; ``tokens`` start at position
  ``q_start``. The LM head runs on those rows only."""
  positions = q_start + jnp.arange(tokens.shape[1])
  out = model.model(tokens, position_ids=jnp.broadcast_to(positions, tokens.shape),
                    attention_fn=lambda q, k, v, mask, layer: attend(q, k, v, layer, q_start))
  hidden = jax.lax.dynamic_slice_in_dim(out.last_hidden_state, row_start, num_rows, 1)
  return model.logits(hidden).astype(jnp.float32)


def policy_logits_fn(graphdef: nnx.GraphDef, geom: Geometry, policy: Policy) -> LogitsFn:
  """Full forward pass over all positions with ``policy``'s attention; the step's rows only."""

  def fn(params, tokens, state, step):
    model = nnx.merge(graphdef, params)
    attend, finish = policy(state, model)
    logits = forward_rows(model, tokens, geom.row_start(step), attend, num_rows=geom.block_length)
    return logits, finish()

  return fn


@dataclasses.dataclass(frozen=True)
class DensePlan(Plan):
  """The exact sampler on an nnx model: dense attention, LM head on the step's rows only."""

  graphdef: nnx.GraphDef
  attention_impl: str | None = None

  def phases(self, geom):
    fn = policy_logits_fn(self.graphdef, geom, dense_policy(self.attention_impl))
    return (Phase(fn, (0,), geom.steps),)


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


def check_block_args(gen_length: int, block_length: int, steps: int,
                     threshold: float | None = None) -> tuple[int, int]:
  """Returns (num_blocks, steps_per_block) or raises ConfigError naming the bad setting."""
  if block_length <= 0:
    raise ConfigError("block_length", block_length, "a positive int")
  if gen_length <= 0 or gen_length % block_length:
    raise ConfigError("gen_length", gen_length, f"a positive multiple of block_length={block_length}")
  num_blocks = gen_length // block_length
  if steps <= 0 or steps % num_blocks:
    raise ConfigError("steps", steps, f"a positive multiple of the number of blocks ({num_blocks})")
  if threshold is not None and not 0.0 < threshold <= 1.0:
    raise ConfigError("threshold", threshold, "a confidence in (0, 1] or None")
  return num_blocks, steps // num_blocks


def _top_rank_mask(scores: jax.Array, k: jax.Array) -> jax.Array:
  """True at the ``k`` (per row) largest scores of each row; ties go to the lower index."""
  order = jnp.argsort(-scores, axis=-1, stable=True)
  ranks = jnp.argsort(order, axis=-1, stable=True)
  return ranks < jnp.asarray(k)[..., None]


def _sampling_loop(plan: Plan, params, x, state, geom: Geometry, *, mask_id: int, cfg_scale: float,
                   threshold: float | None, update: Callable):
  """Runs ``plan``'s phases; ``update(x_block, logits_rows, step) -> (x_block, n_unmasked)``."""
  batch = x.shape[0]
  prompt_index = jnp.arange(x.shape[1]) < geom.prompt_len

  def step(fn):
    def run(i, carry):
      x, counts, state = carry
      if cfg_scale > 0.0:
        un_x = jnp.where(prompt_index, mask_id, x)
        both, state = fn(params, jnp.concatenate([x, un_x]), state, i)
        cond, un = jnp.split(geom.take_rows(both.astype(jnp.float32), i), 2)
        logits = un + (cfg_scale + 1.0) * (cond - un)
      else:
        logits, state = fn(params, x, state, i)
        logits = geom.take_rows(logits.astype(jnp.float32), i)
      start = geom.block_start(i)
      xb = jax.lax.dynamic_slice_in_dim(x, start, geom.block_length, 1)
      xb, n = update(xb, logits, i)
      x = jax.lax.dynamic_update_slice_in_dim(x, xb, start, 1)
      return x, counts.at[i].set(n), state

    if threshold is None:
      return run

    def maybe(i, carry):  # a finished block needs no forward pass
      xb = jax.lax.dynamic_slice_in_dim(carry[0], geom.block_start(i), geom.block_length, 1)
      return jax.lax.cond(jnp.any(xb == mask_id), lambda c: run(i, c), lambda c: c, carry)

    return maybe

  counts = jnp.zeros((geom.steps, batch), jnp.int32)
  return _run_phases(plan.phases(geom), step, (x, counts, state))


def llada_generate(logits_fn: LogitsFn | Plan, params: Any, prompt: jax.Array, rng: jax.Array, *,
                   steps: int = 128, gen_length: int = 128, block_length: int = 128,
                   temperature: float = 0.0, cfg_scale: float = 0.0,
                   remasking: str = "low_confidence", mask_id: int = 126336,
                   threshold: float | None = None, state: Any = ()) -> DiffusionOutput:
  """LLaDA semi-autoregressive sampling: ``gen_length`` masks after ``prompt`` [B, P].

  ``logits_fn``: a logits function or a :class:`Plan`; ``threshold``: confidence-threshold parallel
  decoding (module docstring).
  """
  check_block_args(gen_length, block_length, steps, threshold)
  if remasking not in LLADA_REMASKING:
    raise ConfigError("remasking", remasking, f"one of {LLADA_REMASKING}")
  return _llada_jit(as_plan(logits_fn), params, jnp.asarray(prompt, jnp.int32), rng, state,
                    steps=steps, gen_length=gen_length, block_length=block_length,
                    temperature=float(temperature), cfg_scale=float(cfg_scale),
                    remasking=remasking, mask_id=int(mask_id),
                    threshold=None if threshold is None else float(threshold))


@functools.partial(jax.jit, static_argnames=("plan", "steps", "gen_length", "block_length",
                                             "temperature", "cfg_scale", "remasking", "mask_id",
                                             "threshold"))
def _llada_jit(plan, params, prompt, rng, state, *, steps, gen_length, block_length,
               temperature, cfg_scale, remasking, mask_id, threshold):
  batch, prompt_len = prompt.shape
  geom = Geometry(prompt_len, gen_length, block_length, steps)
  schedule = jnp.asarray(llada_schedule(block_length, geom.steps_per_block))
  x = jnp.concatenate([prompt, jnp.full((batch, gen_length), mask_id, jnp.int32)], axis=1)

  def update(xb, logits, i):
    mask_index = xb == mask_id
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
    conf = jnp.where(mask_index, x0_p, -jnp.inf)
    transfer = _top_rank_mask(conf, schedule[i % geom.steps_per_block])
    if threshold is not None:
      transfer |= conf >= threshold
    transfer &= mask_index
    return jnp.where(transfer, x0, xb), transfer.sum(-1, dtype=jnp.int32)

  init = plan.init_state(geom, batch * (2 if cfg_scale > 0.0 else 1), state, params)
  x, counts, state = _sampling_loop(plan, params, x, init, geom, mask_id=mask_id,
                                    cfg_scale=cfg_scale, threshold=threshold, update=update)
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


def dream_generate(logits_fn: LogitsFn | Plan, params: Any, prompt: jax.Array, rng: jax.Array,
                   *, steps: int = 512, gen_length: int = 512, block_length: int | None = None,
                   alg: str = "origin", eps: float = 1e-3, temperature: float = 0.0,
                   top_p: float | None = None, top_k: int | None = None,
                   alg_temp: float | None = None, mask_id: int = 151666,
                   threshold: float | None = None, state: Any = ()) -> DiffusionOutput:
  """Dream sampling: shifted logits, timesteps ``linspace(1, eps, steps + 1)``, ``alg`` reveal.

  ``block_length`` (default ``gen_length``: Dream's own sampler) decodes block by block, each block
  with its own timestep schedule over ``steps // num_blocks`` steps; ``threshold`` as in
  :func:`llada_generate` (not with ``alg="origin"``, which has no confidence).
  """
  if alg not in DREAM_ALGS:
    raise ConfigError("alg", alg, f"one of {DREAM_ALGS}")
  block_length = gen_length if block_length is None else block_length
  check_block_args(gen_length, block_length, steps, threshold)
  if threshold is not None and alg == "origin":
    raise ConfigError("threshold", threshold, "None with alg='origin' (it has no confidence)")
  prompt = jnp.asarray(prompt, jnp.int32)
  if prompt.shape[1] < 1:
    raise ShapeError("prompt", prompt.shape, "[B, P] with P >= 1 (Dream reads output i - 1)")
  return _dream_jit(as_plan(logits_fn), params, prompt, rng, state, steps=steps,
                    gen_length=gen_length, block_length=block_length, alg=alg, eps=float(eps),
                    temperature=float(temperature), top_p=top_p, top_k=top_k,
                    alg_temp=float(alg_temp or 0.0), mask_id=int(mask_id),
                    threshold=None if threshold is None else float(threshold))


@functools.partial(jax.jit, static_argnames=("plan", "steps", "gen_length", "block_length", "alg",
                                             "eps", "temperature", "top_p", "top_k", "alg_temp",
                                             "mask_id", "threshold"))
def _dream_jit(plan, params, prompt, rng, state, *, steps, gen_length, block_length, alg, eps,
               temperature, top_p, top_k, alg_temp, mask_id, threshold):
  batch, prompt_len = prompt.shape
  geom = Geometry(prompt_len, gen_length, block_length, steps, shift=1)
  spb = geom.steps_per_block
  x = jnp.concatenate([prompt, jnp.full((batch, gen_length), mask_id, jnp.int32)], axis=1)
  timesteps = jnp.linspace(1.0, eps, spb + 1, dtype=jnp.float32)

  def update(xb, logits, i):
    mask_index = xb == mask_id
    j = i % spb
    t, s = timesteps[j], timesteps[j + 1]
    k_tok, k_pick = jax.random.split(jax.random.fold_in(rng, i))
    conf, x0 = _sample_tokens(logits, k_tok, temperature, top_p, top_k, alg)
    last = j == spb - 1
    if alg == "origin":
      p_transfer = jnp.where(last, 1.0, 1.0 - s / t)
      transfer = mask_index & (jax.random.uniform(k_pick, xb.shape) < p_transfer)
    else:
      n_masked = mask_index.sum(-1)
      n = jnp.where(last, n_masked,
                    (n_masked.astype(jnp.float32) * (1.0 - s / t)).astype(jnp.int32))
      scores = jnp.where(mask_index, conf, -jnp.inf)
      if alg_temp > 0.0:
        scores = scores / alg_temp + jax.random.gumbel(k_pick, scores.shape)
      if threshold is not None:
        n = jnp.maximum(n, 1)
      transfer = _top_rank_mask(scores, n)
      if threshold is not None:
        transfer |= conf >= threshold
      transfer &= mask_index
    return jnp.where(transfer, x0, xb), transfer.sum(-1, dtype=jnp.int32)

  init = plan.init_state(geom, batch, state, params)
  x, counts, state = _sampling_loop(plan, params, x, init, geom, mask_id=mask_id, cfg_scale=0.0,
                                    threshold=threshold, update=update)
  return DiffusionOutput(x, counts, state)


def model_logits_fn(graphdef: Any, **call_kwargs) -> LogitsFn:
  """Stateless logits function of an nnx model split as ``graphdef, params = nnx.split(model)``."""
  return stateless(lambda params, tokens: nnx.merge(graphdef, params)(tokens, **call_kwargs).logits)
