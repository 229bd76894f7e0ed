"""Answer generation and accuracy for every method, with forward passes per question.

Latent methods (one jit-compiled function): the question pass ``Q <bot> <lat>*M`` (1 forward
pass), T Jacobi iterations (T passes), then greedy answer decoding against the last iteration's
KV: ``<eot> + answer prefix`` gives the first answer token (1 pass) and each further token one
more, until ``<eos>``. CoT (the prompt is the question) and No-CoT (question + answer prefix)
decode greedily with ``jaxvlm.generation.generate``: one pass per generated token (the prefill
gives the first). Forward passes per question count every sequential model call, ``<eos>``
included.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvlm.eval.gsm8k import extract_answer, normalize_number
from jaxvlm.generation import decode, generate
from jaxvlm.methods.kava import passes
from jaxvlm.methods.kava.data import encode_text, prompt_ids
from jaxvlm import frozen


def latent_generate(model, q_ids, q_mask, prefix_ids: Sequence[int], *, num_latents: int,
                    iterations: int, max_new_tokens: int, eos_token_id: int,
                    pad_token_id: int = 0) -> tuple[jax.Array, jax.Array]:
  """Greedy answers after M latents refined T times: (tokens ``[B, max_new]``, tokens generated
  per row incl. ``<eos>``); forward passes per row = ``1 + T + count``."""
  passes.check_latents(num_latents, iterations)
  graphdef, state = frozen.split(model)
  return _latent_jit(graphdef, state, jnp.asarray(q_ids, jnp.int32), jnp.asarray(q_mask, jnp.int32),
                     jnp.asarray(prefix_ids, jnp.int32), num_latents=num_latents,
                     iterations=iterations, max_new_tokens=max_new_tokens,
                     eos=int(eos_token_id), pad=int(pad_token_id))


@functools.partial(jax.jit, static_argnames=("graphdef", "num_latents", "iterations",
                                              "max_new_tokens", "eos", "pad"))
def _latent_jit(graphdef, state, q_ids, q_mask, prefix, *, num_latents, iterations,
                max_new_tokens, eos, pad):
  model = nnx.merge(graphdef, state)
  b, lq = q_ids.shape
  m, p = num_latents, prefix.shape[0]
  start = lq + 1 + m
  total = start + 1 + p + max_new_tokens
  cache, emb, pos = passes.student_prefill(model, q_ids, q_mask, m, total)
  cache, _, _ = passes.jacobi(model, cache, emb, pos, lq + 1, iterations, keep_all=False)
  ids = jnp.broadcast_to(jnp.concatenate([jnp.asarray([model.eot_id], jnp.int32), prefix]),
                         (b, 1 + p))
  out = model.lm(ids, attention_mask=jnp.ones((b, 1 + p), jnp.int32),
                 position_ids=pos[:, start:start + 1 + p],
                 cache=cache.replace(index=jnp.asarray(start, jnp.int32)), logits_to_keep=1)
  ones = jnp.ones((b, 1), jnp.int32)
  step_fn = lambda token, cache, i: model.lm(
      token[:, None], attention_mask=ones, cache=cache, logits_to_keep=1,
      position_ids=jax.lax.dynamic_slice_in_dim(pos, start + p + 1 + i, 1, 1))
  tokens, num, _ = decode(step_fn, out.logits[:, -1], out.cache, jax.random.key(0),
                          max_new_tokens=max_new_tokens, eos=(eos,), pad_token_id=pad)
  return tokens, num


def _decode(tok, row: np.ndarray) -> str:
  ends = np.flatnonzero(row == tok.eos_token_id)
  return tok.decode(row[:ends[0] if len(ends) else len(row)].tolist())


def _left_pad(rows: list[list[int]], batch: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
  width = max(map(len, rows))
  ids, mask = np.full((batch, width), pad, np.int32), np.zeros((batch, width), np.int32)
  for i, r in enumerate(rows):
    ids[i, width - len(r):], mask[i, width - len(r):] = r, 1
  mask[len(rows):, -1] = 1  # unused rows: one valid token
  return ids, mask


def evaluate(model, tok, examples: Sequence[dict], *, method: str, num_latents: int,
             iterations: int, question_template: str, answer_prefix: str, max_new_tokens: int,
             batch_size: int = 64) -> dict:
  """Exact-match accuracy, mean forward passes per question and the predictions."""
  prefix = encode_text(tok, answer_prefix)
  preds, hits, fwd = [], [], []
  for s in range(0, len(examples), batch_size):
    chunk = examples[s:s + batch_size]
    prompts = [prompt_ids(tok, e["question"], question_template) for e in chunk]
    if method == "nocot":
      prompts = [p + prefix for p in prompts]
    ids, mask = _left_pad(prompts, batch_size, tok.pad_token_id)
    if method in ("cot", "nocot"):
      out = generate(model.lm, ids, mask, max_new_tokens, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id)
      new, num, extra = np.asarray(out.new_tokens), np.asarray(out.num_generated), 0
    else:
      new, num = map(np.asarray, latent_generate(
          model, ids, mask, prefix, num_latents=num_latents, iterations=iterations,
          max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id,
          pad_token_id=tok.pad_token_id))
      extra = 1 + iterations
    for e, row, n in zip(chunk, new, num):
      text = _decode(tok, row)
      text = text if method == "cot" else answer_prefix + text
      preds.append(text)
      got = extract_answer(text)
      hits.append(got is not None and got == normalize_number(str(e["answer"]).split("####")[-1]))
      fwd.append(int(n) + extra)
  return {"accuracy": float(np.mean(hits)), "forward_passes": float(np.mean(fwd)),
          "predictions": preds}
