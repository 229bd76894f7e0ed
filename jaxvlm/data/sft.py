"""Supervised fine-tuning batches: ``prompt + answer + eos`` with the loss on the answer only.

A batch is ``{"input_ids", "attention_mask", "loss_mask"}`` (``[B, S]`` int32), right-padded;
``loss_mask[t] = 1`` where token ``t`` is an answer token (predicted from position ``t - 1``).
The order is a function of (seed, step): epoch ``e`` visits the examples in the permutation
``default_rng([seed, e])``, so resuming at a step needs only the step.
"""

from __future__ import annotations

from typing import Callable, Iterator, Protocol, Sequence

import numpy as np


class Tokenizer(Protocol):
  pad_token_id: int
  bos_token_id: int | None
  eos_token_id: int

  def encode(self, text: str) -> list[int]: ...


def prompt_text(question: str) -> str:
  return f"Question: {question}\nAnswer: "


def encode_example(tok: Tokenizer, example: dict, seq_len: int) -> dict[str, np.ndarray]:
  """``input_ids``, ``attention_mask`` and ``loss_mask`` of length ``seq_len`` (truncated on
  the right, padded with ``pad_token_id``)."""
  bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
  prompt = bos + tok.encode(prompt_text(example["question"]))
  full = (prompt + tok.encode(example["answer"]) + [tok.eos_token_id])[:seq_len]
  out = {k: np.zeros(seq_len, np.int32) for k in ("input_ids", "attention_mask", "loss_mask")}
  out["input_ids"][:] = tok.pad_token_id
  out["input_ids"][:len(full)] = full
  out["attention_mask"][:len(full)] = 1
  out["loss_mask"][len(prompt):len(full)] = 1
  return out


def encode_all(tok: Tokenizer, examples: Sequence[dict], seq_len: int) -> dict[str, np.ndarray]:
  """:func:`encode_example` of every example, stacked to ``[N, seq_len]``."""
  rows = [encode_example(tok, e, seq_len) for e in examples]
  return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def batch_factory(data: dict[str, np.ndarray], batch_size: int
                  ) -> Callable[[int, int], Iterator[dict[str, np.ndarray]]]:
  """``factory(seed, start_step)`` yielding batches of ``data`` in epoch permutations."""
  n = len(next(iter(data.values())))

  def factory(seed: int, start_step: int) -> Iterator[dict[str, np.ndarray]]:
    step = start_step
    while True:
      positions = np.arange(step * batch_size, (step + 1) * batch_size)
      epochs, offsets = positions // n, positions % n
      perms = {e: np.random.default_rng([seed, int(e)]).permutation(n) for e in set(epochs)}
      idx = np.array([perms[e][o] for e, o in zip(epochs, offsets)])
      yield {k: v[idx] for k, v in data.items()}
      step += 1
  return factory
