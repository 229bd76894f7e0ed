"""GSM8K answer extraction, exact match, and greedy-decoding evaluation of a causal LM.

``extract_answer`` follows the GSM8K convention: the number after the last ``####``; failing
that, after ``The answer is``; failing that, the last number in the text. Numbers are
normalised (commas and a trailing ``.`` removed, ``3.0`` -> ``3``).
"""

from __future__ import annotations

import re
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvlm.data.sft import Tokenizer, prompt_text

_NUMBER = r"-?[\d,]*\.?\d+"


def normalize_number(text: str) -> str:
  """``"1,234.0"`` -> ``"1234"``; non-numbers are returned stripped."""
  s = text.strip().replace(",", "").rstrip(".")
  try:
    value = float(s)
  except ValueError:
    return s
  return str(int(value)) if value.is_integer() else repr(value)


def extract_answer(text: str) -> str | None:
  """The final numeric answer of a GSM8K-style solution, or None when there is none."""
  for marker in (r"####\s*(" + _NUMBER + ")", r"[Tt]he answer is:?\s*\$?(" + _NUMBER + ")"):
    found = re.findall(marker, text)
    if found:
      return normalize_number(found[-1])
  numbers = re.findall(_NUMBER, text)
  return normalize_number(numbers[-1]) if numbers else None


def exact_match(prediction: str, reference: str) -> bool:
  """Whether the extracted answers of the two texts are equal (and present)."""
  p, r = extract_answer(prediction), extract_answer(reference)
  return p is not None and p == r


@nnx.jit(static_argnames=("max_new_tokens",))
def _greedy(model: nnx.Module, ids: jax.Array, mask: jax.Array, max_new_tokens: int) -> jax.Array:
  """Appends ``max_new_tokens`` greedy tokens to left-padded ``ids`` by full re-computation."""
  b, p = ids.shape
  ids = jnp.concatenate([ids, jnp.zeros((b, max_new_tokens), ids.dtype)], 1)
  mask = jnp.concatenate([mask, jnp.zeros((b, max_new_tokens), mask.dtype)], 1)

  def body(i, carry):
    ids, mask = carry
    logits = model(ids, attention_mask=mask).logits
    nxt = jnp.argmax(jax.lax.dynamic_index_in_dim(logits, p + i - 1, 1, keepdims=False), -1)
    ids = jax.lax.dynamic_update_index_in_dim(ids, nxt.astype(ids.dtype), p + i, 1)
    mask = jax.lax.dynamic_update_index_in_dim(mask, jnp.ones((b,), mask.dtype), p + i, 1)
    return ids, mask
  ids, _ = jax.lax.fori_loop(0, max_new_tokens, body, (ids, mask))
  return ids[:, p:]


def generate_answers(model: nnx.Module, tok: Tokenizer, questions: Sequence[str],
                     max_new_tokens: int, batch_size: int = 64) -> list[str]:
  """Greedy completions of ``prompt_text(question)`` for each question."""
  out = []
  for start in range(0, len(questions), batch_size):
    chunk = questions[start:start + batch_size]
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    encoded = [bos + tok.encode(prompt_text(q)) for q in chunk]
    width = max(map(len, encoded))
    ids = np.full((batch_size, width), tok.pad_token_id, np.int32)
    mask = np.zeros((batch_size, width), np.int32)
    for i, e in enumerate(encoded):  # left padding; unused rows stay all-padding
      ids[i, width - len(e):], mask[i, width - len(e):] = e, 1
    mask[len(encoded):, -1] = 1
    new = np.asarray(_greedy(model, jnp.asarray(ids), jnp.asarray(mask), max_new_tokens))
    for row in new[:len(chunk)]:
      ends = np.flatnonzero(row == tok.eos_token_id)
      out.append(tok.decode(row[:ends[0] if len(ends) else len(row)].tolist()))
  return out


def evaluate(model: nnx.Module, tok: Tokenizer, examples: Sequence[dict], max_new_tokens: int,
             batch_size: int = 64) -> dict:
  """Exact-match accuracy of greedy answers against the examples' ``#### N`` references."""
  preds = generate_answers(model, tok, [e["question"] for e in examples], max_new_tokens,
                           batch_size)
  hits = [exact_match(p, e["answer"]) for p, e in zip(preds, examples)]
  return {"accuracy": float(np.mean(hits)), "predictions": preds}
