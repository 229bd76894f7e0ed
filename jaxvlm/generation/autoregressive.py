"""Autoregressive generation: one jit-compiled prefill + ``while_loop`` decode over a KV cache.

Works for any model with ``init_cache(batch, max_len)`` and the decoder call signature
(``input_ids | inputs_embeds, attention_mask, cache, logits_to_keep``). Multimodal models may
define ``prepare_inputs(input_ids, attention_mask, **kwargs) -> kwargs``, run on the host before
compilation (work whose shapes depend on the inputs, such as Qwen2.5-VL's image grids), and
``prefill_inputs(input_ids, attention_mask, **kwargs) -> (call_kwargs, decode_kwargs)``:
the first dict is passed to the prefill call (e.g. ``inputs_embeds`` with merged visual features,
position tables), the second to every decode call (e.g. M-RoPE ``rope_deltas``). The returned
``sequences`` always hold the prompt ids followed by the generated ids.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvlm.errors import ConfigError, ShapeError
from jaxvlm.generation.defaults import model_defaults
from jaxvlm import frozen


@flax.struct.dataclass
class GenerateOutput:
  """``sequences [B, P + max_new_tokens]`` = prompt + generated ids (``pad_token_id`` after EOS);
  ``num_generated [B]`` counts generated tokens up to and including EOS; ``cache``: the final KV
  cache (slot ``i`` = column ``i`` of ``sequences``; the last column is never fed back) when asked
  for with ``return_cache=True``, else None."""

  sequences: jax.Array
  num_generated: jax.Array
  prompt_length: int = flax.struct.field(pytree_node=False, default=0)
  cache: Any = None

  @property
  def new_tokens(self) -> jax.Array:
    return self.sequences[:, self.prompt_length:]


def sample_logits(logits: jax.Array, rng: jax.Array, *, temperature: float = 0.0, top_k: int = 0,
                  top_p: float = 1.0) -> jax.Array:
  """Greedy (``temperature == 0``) or temperature / top-k / top-p sampling from ``logits [B, V]``."""
  if temperature == 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits.astype(jnp.float32) / temperature
  neg = jnp.finfo(jnp.float32).min
  if top_k > 0:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, neg, logits)
  if top_p < 1.0:
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    # drop a token when the mass strictly before it already exceeds top_p (keeps >= 1 token)
    drop_sorted = (jnp.cumsum(probs, axis=-1) - probs) > top_p
    drop = jnp.zeros_like(drop_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(
        drop_sorted)
    logits = jnp.where(drop, neg, logits)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def _validate(input_ids, attention_mask, max_new_tokens, temperature, top_k, top_p):
  if input_ids.ndim != 2:
    raise ShapeError("input_ids", tuple(input_ids.shape), "a [batch, length] array")
  if attention_mask is not None and attention_mask.shape != input_ids.shape:
    raise ShapeError("attention_mask", tuple(attention_mask.shape),
                     f"the shape of input_ids {tuple(input_ids.shape)}")
  if max_new_tokens < 1:
    raise ConfigError("max_new_tokens", max_new_tokens, "an integer >= 1")
  if temperature < 0:
    raise ConfigError("temperature", temperature, "a value >= 0")
  if top_k < 0:
    raise ConfigError("top_k", top_k, "an integer >= 0 (0 = off)")
  if not 0.0 < top_p <= 1.0:
    raise ConfigError("top_p", top_p, "a value in (0, 1]")


def generate(model: nnx.Module, input_ids, attention_mask=None, max_new_tokens: int | None = None,
             *, temperature: float | None = None, top_k: int | None = None,
             top_p: float | None = None, eos_token_id: int | list[int] | None = None,
             pad_token_id: int | None = None, rng: jax.Array | None = None,
             return_cache: bool = False, stop_check_every: int = 1, min_new_tokens: int = 0,
             **model_kwargs) -> GenerateOutput:
  """Generates up to ``max_new_tokens`` tokens after a left-padded prompt batch.

  Arguments left at ``None`` come from ``model.generation_config`` (the checkpoint's
  ``generation_config.json``, see :mod:`jaxvlm.generation.defaults`), as in ``transformers``:
  greedy unless it says ``do_sample``; sequences stop at any of its EOS ids (``eos_token_id=()``
  never stops); positions after EOS hold ``pad_token_id`` (default: pad, else the first EOS id);
  ``max_new_tokens`` defaults to 32. ``return_cache`` keeps the final KV cache in the output
  (e.g. to re-read the generated tokens' attention without a second prefill).
  ``stop_check_every`` = k: the decode loop tests "every row has stopped" once per k steps
  instead of every step. On a GPU each test of a data-dependent loop condition is a device-to-host
  copy that drains the stream (measured at under 1% of a 7B decode step on an H200,
  ``benchmarks/bench_decode_step.py``); with k > 1 up to k - 1 steps run after the last EOS
  (their tokens are padding; the outputs are the same for every k). Without EOS ids the step
  count is fixed and nothing is tested. ``min_new_tokens`` = m: no EOS id is picked among the
  first m tokens (``transformers``' ``min_new_tokens``). Extra ``model_kwargs`` (pixel values,
  image grids) go to ``model.prefill_inputs``.
  """
  defaults = model_defaults(model)
  sampling = defaults.sampling()
  temperature = sampling["temperature"] if temperature is None else temperature
  top_k = sampling["top_k"] if top_k is None else top_k
  top_p = sampling["top_p"] if top_p is None else top_p
  if max_new_tokens is None:
    max_new_tokens = defaults.max_new_tokens or 32
  eos = defaults.eos_token_id if eos_token_id is None else tuple(
      np.atleast_1d(eos_token_id).astype(int).tolist())
  if pad_token_id is None:
    pad_token_id = (defaults.pad_token_id if defaults.pad_token_id is not None
                    else eos[0] if eos else 0)
  input_ids = jnp.asarray(input_ids, jnp.int32)
  attention_mask = (jnp.ones_like(input_ids) if attention_mask is None
                    else jnp.asarray(attention_mask, jnp.int32))
  _validate(input_ids, attention_mask, max_new_tokens, temperature, top_k, top_p)
  if stop_check_every < 1:
    raise ConfigError("stop_check_every", stop_check_every, "an integer >= 1")
  if not 0 <= min_new_tokens <= max_new_tokens:
    raise ConfigError("min_new_tokens", min_new_tokens, f"an integer in [0, {max_new_tokens}]")
  rng = jax.random.key(0) if rng is None else rng
  if model_kwargs and hasattr(model, "prepare_inputs"):
    model_kwargs = model.prepare_inputs(input_ids, attention_mask, **model_kwargs)
  graphdef, state = frozen.split(model)
  new_tokens, num, cache = _generate_jit(
      graphdef, state, input_ids, attention_mask, rng, model_kwargs,
      max_new_tokens=max_new_tokens, temperature=float(temperature), top_k=int(top_k),
      top_p=float(top_p), eos=eos, pad_token_id=int(pad_token_id), return_cache=return_cache,
      stop_check_every=int(stop_check_every), min_new_tokens=int(min_new_tokens))
  return GenerateOutput(jnp.concatenate([input_ids, new_tokens], axis=1), num,
                        prompt_length=input_ids.shape[1], cache=cache)


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "temperature",
                                              "top_k", "top_p", "eos", "pad_token_id",
                                              "return_cache", "stop_check_every",
                                              "min_new_tokens"))
def _generate_jit(graphdef, state, input_ids, attention_mask, rng, model_kwargs, *,
                  max_new_tokens, temperature, top_k, top_p, eos, pad_token_id, return_cache,
                  stop_check_every, min_new_tokens=0):
  model = nnx.merge(graphdef, state)
  batch = input_ids.shape[0]
  sample = functools.partial(sample_logits, temperature=temperature, top_k=top_k, top_p=top_p)
  if hasattr(model, "prefill_inputs"):
    prefill_kwargs, decode_kwargs = model.prefill_inputs(input_ids, attention_mask, **model_kwargs)
  else:
    prefill_kwargs, decode_kwargs = {"input_ids": input_ids, **model_kwargs}, {}  # e.g. prune
  prefill_kwargs.setdefault("attention_mask", attention_mask)
  prefill_len = (prefill_kwargs["inputs_embeds"].shape[1] if "inputs_embeds" in prefill_kwargs
                 else prefill_kwargs["input_ids"].shape[1])
  cache = model.init_cache(batch, prefill_len + max_new_tokens)
  out = model(cache=cache, logits_to_keep=1, **prefill_kwargs)
  ones = jnp.ones((batch, 1), jnp.int32)
  step_fn = lambda token, cache, step: model(input_ids=token[:, None], attention_mask=ones,
                                             cache=cache, logits_to_keep=1, **decode_kwargs)
  tokens, num, cache = decode(step_fn, out.logits[:, -1], out.cache, rng,
                              max_new_tokens=max_new_tokens, sample=sample, eos=eos,
                              pad_token_id=pad_token_id, stop_check_every=stop_check_every,
                              min_new_tokens=min_new_tokens)
  return tokens, num, cache if return_cache else None


def decode(step_fn, logits, cache, rng, *, max_new_tokens: int, sample=None, eos=(),
           pad_token_id: int = 0, stop_check_every: int = 1, min_new_tokens: int = 0):
  """The decode loop after a prefill (traced; for use inside ``jit``): samples the first token
  from ``logits [B, V]``, then feeds each token back through ``step_fn(token [B], cache, step)
  -> output with .logits [B, 1, V] and .cache`` (``step`` = index of the token being fed, 0 =
  the first generated one) until ``max_new_tokens`` tokens or every row has emitted one of the
  ``eos`` ids (tested once per ``stop_check_every`` steps, see :func:`generate`); no EOS id is
  picked among the first ``min_new_tokens`` tokens. ``sample``:
  ``(logits, key) -> ids`` (default greedy). Returns (tokens ``[B, max_new_tokens]``, padded with
  ``pad_token_id`` after EOS; tokens generated per row incl. EOS; the final cache)."""
  sample = sample or (lambda lg, _: jnp.argmax(lg, axis=-1).astype(jnp.int32))

  def pick(lg, key, index):  # index: position of the token among the new ones
    if min_new_tokens and eos:
      is_eos_id = jnp.zeros(lg.shape[-1], bool).at[jnp.asarray(eos, jnp.int32)].set(True)
      lg = jnp.where((index < min_new_tokens) & is_eos_id, jnp.finfo(jnp.float32).min,
                     lg.astype(jnp.float32))
    return sample(lg, key)

  batch = logits.shape[0]
  rng, key = jax.random.split(rng)
  token = pick(logits, key, 0)
  eos_arr = jnp.asarray(eos if eos else (-1,), jnp.int32)
  is_eos = lambda t: jnp.any(t[:, None] == eos_arr[None, :], axis=-1) if eos else jnp.zeros(
      t.shape, bool)
  tokens = jnp.full((batch, max_new_tokens), pad_token_id, jnp.int32).at[:, 0].set(token)

  def body(carry):
    step, token, cache, tokens, done, num, rng = carry
    out = step_fn(token, cache, step - 1)
    rng, key = jax.random.split(rng)
    nxt = jnp.where(done, pad_token_id, pick(out.logits[:, -1], key, step))
    tokens = jax.lax.dynamic_update_slice(tokens, nxt[:, None], (0, step))
    num = num + (~done).astype(jnp.int32)
    done = done | is_eos(nxt)
    return step + 1, nxt, out.cache, tokens, done, num, rng

  carry = (jnp.int32(1), token, cache, tokens, is_eos(token), jnp.ones((batch,), jnp.int32), rng)
  carry = _decode_loop(body, carry, max_new_tokens - 1, stop_check_every if eos else None)
  _, _, cache, tokens, _, num, _ = carry
  return tokens, num, cache


def _decode_loop(body, carry, steps: int, check_every: int | None):
  """Runs ``body`` ``steps`` times, stopping early once every row is done (``carry[4]``), tested
  once per ``check_every`` steps (``None``: never). The inner loops have static trip counts, so
  only the tests read the device (see ``generate``'s ``stop_check_every``)."""
  run = lambda n, c: jax.lax.fori_loop(0, n, lambda _, c: body(c), c)
  if check_every is None or steps == 0:
    return run(steps, carry)
  k = min(check_every, steps)
  chunks, rest = divmod(steps, k)
  first = carry[0]
  carry = jax.lax.while_loop(lambda c: (c[0] < first + chunks * k) & ~jnp.all(c[4]),
                             functools.partial(run, k), carry)
  if rest:
    carry = jax.lax.cond(jnp.all(carry[4]), lambda c: c, functools.partial(run, rest), carry)
  return carry
