"""Fixed-slot KAVA batches from ``{"question", "cot", "answer"}`` records.

Each example becomes three segments (int32, see ``passes``): the question
``<bos> question_template(question)`` left-padded to ``q_len``; the CoT ``cot + " "`` right-padded
to ``cot_len``; the answer ``answer_prefix + " " + answer + <eos>`` right-padded to ``ans_len``
(``ans_loss`` marks the tokens after the prefix). A segment longer than its budget is an error
naming the budget field. ``<bot>``, ``<eot>`` and the latent placeholder are single tokens named
by the config (``special_token_id``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxvlm.data.gsm8k import split_solution
from jaxvlm.errors import ConfigError


def encode_text(tok, text: str) -> list[int]:
  """Token ids of ``text`` without special tokens (HF tokenizers and the char tokenizer)."""
  try:
    return list(tok.encode(text, add_special_tokens=False))
  except TypeError:
    return list(tok.encode(text))


def special_token_id(tok, token: str, field: str) -> int:
  """The id of a single-token string (a reserved special token of a HF tokenizer, or a char)."""
  if hasattr(tok, "convert_tokens_to_ids"):
    i = tok.convert_tokens_to_ids(token)
    if isinstance(i, int) and i != getattr(tok, "unk_token_id", None):
      return i
  ids = encode_text(tok, token)
  if len(ids) != 1:
    raise ConfigError(field, token, "a string that is exactly one token of the tokenizer")
  return ids[0]


def as_cot_record(example: dict, where: str = "example") -> dict:
  """``{"question", "answer": "steps #### N"}`` or ``{"question", "cot", "answer"}`` -> the
  latter (a record without ``cot`` and without ``####`` is an error)."""
  if "cot" in example:
    return example
  cot, final = split_solution(example["answer"], f"{where}.answer")
  return {"question": example["question"], "cot": cot, "answer": final}


def prompt_ids(tok, question: str, template: str) -> list[int]:
  bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
  return bos + encode_text(tok, template.format(question=question))


def encode(tok, examples: Sequence[dict], *, q_len: int, cot_len: int, ans_len: int,
           question_template: str, answer_prefix: str) -> dict[str, np.ndarray]:
  """Stacked ``q_*``, ``cot_*``, ``ans_*`` arrays ``[N, L]`` (see the module docstring)."""
  n = len(examples)
  out = {f"{s}_{k}": np.zeros((n, length), np.int32)
         for s, length in (("q", q_len), ("cot", cot_len), ("ans", ans_len))
         for k in ("ids", "mask")}
  out["ans_loss"] = np.zeros((n, ans_len), np.int32)
  prefix = encode_text(tok, answer_prefix)
  for i, ex in enumerate(examples):
    ex = as_cot_record(ex, f"examples[{i}]")
    q = prompt_ids(tok, ex["question"], question_template)
    c = encode_text(tok, ex["cot"] + " ")
    a = encode_text(tok, " " + ex["answer"]) + [tok.eos_token_id]
    for name, ids, budget in (("data.q_len", q, q_len), ("data.cot_len", c, cot_len),
                              ("data.ans_len", prefix + a, ans_len)):
      if len(ids) > budget:
        raise ConfigError(name, budget, f">= {len(ids)} tokens for examples[{i}] "
                          f"({ex['question'][:40]!r}); raise the budget or filter the data")
    out["q_ids"][i] = tok.pad_token_id
    out["q_ids"][i, q_len - len(q):], out["q_mask"][i, q_len - len(q):] = q, 1
    for seg, ids in (("cot", c), ("ans", prefix + a)):
      out[f"{seg}_ids"][i] = tok.pad_token_id
      out[f"{seg}_ids"][i, :len(ids)], out[f"{seg}_mask"][i, :len(ids)] = ids, 1
    out["ans_loss"][i, len(prefix):len(prefix) + len(a)] = 1
  return out


def lengths_needed(tok, examples: Sequence[dict], question_template: str,
                   answer_prefix: str) -> dict[str, int]:
  """The smallest ``q_len``, ``cot_len``, ``ans_len`` that fit every example."""
  recs = [as_cot_record(e) for e in examples]
  prefix = len(encode_text(tok, answer_prefix))
  return {"q_len": max(len(prompt_ids(tok, r["question"], question_template)) for r in recs),
          "cot_len": max(len(encode_text(tok, r["cot"] + " ")) for r in recs),
          "ans_len": max(prefix + len(encode_text(tok, " " + r["answer"])) + 1 for r in recs)}
