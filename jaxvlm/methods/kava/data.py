"""Fixed-slot KAVA batches from ``{"question", "cot", "answer"}`` records.

Each example becomes three segments (int32, see ``passes``): the question
``<bos> question_template(question)`` left-padded to ``q_len``; the CoT ``cot + " "`` right-padded
to ``cot_len``; the answer ``answer_prefix + " " + answer + <eos>`` right-padded to ``ans_len``
(``ans_loss`` marks the tokens after the prefix). A segment longer than its budget is an error
naming the budget field; ``fit_budget`` drops or truncates such records first
(``data.over_budget``). ``<bot>``, ``<eot>`` and the latent placeholder are single tokens named
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


def resolve_codi_offset(tok, answer_prefix: str, probes: Sequence[str] = tuple("0123456789")
                        ) -> int:
  """The CODI offset for ``tok``: how many tokens after the delimiter ``answer_prefix`` the state
  that predicts the first non-whitespace answer token lies.

  The answer segment is ``encode(answer_prefix) + encode(" " + answer)`` (``encode``); the
  offset is the number of whitespace-only tokens that open ``encode(" " + answer)`` (0 when the
  space is merged into the answer's first token, as GPT-2's; 1 when it stands alone, as with
  LLaMA-3, Qwen2 and the char tokenizer). Every probe answer (by default the answers that open
  with a digit) must agree, else an error naming ``kava.codi_offset``. A negative answer may open
  otherwise (Qwen2 merges ``" -"`` into one token): there the compared state is one token later,
  predicting the first digit after the sign (CODI's code drops such records instead).
  """
  prefix = encode_text(tok, answer_prefix)
  found = set()
  for probe in probes:
    segment = prefix + encode_text(tok, " " + probe)  # as ``encode`` builds it
    first = len(prefix)
    while first < len(segment) and not tok.decode([segment[first]]).strip():
      first += 1
    found.add(first - len(prefix))
  if len(found) != 1:
    raise ConfigError("kava.codi_offset", "auto", f"an int: answers {list(probes)} open with "
                      f"{sorted(found)} whitespace tokens under this tokenizer")
  return found.pop()


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


def _segments(tok, ex: dict, question_template: str, prefix: list[int]):
  """(question ids, CoT ids, answer segment ids, answer start) of one record."""
  q = prompt_ids(tok, ex["question"], question_template)
  c = encode_text(tok, ex["cot"] + " ")
  a = encode_text(tok, " " + ex["answer"]) + [tok.eos_token_id]
  return q, c, prefix + a, len(prefix)


OVER_BUDGET = ("error", "drop", "truncate_cot")


def fit_budget(tok, examples: Sequence[dict], *, q_len: int, cot_len: int, ans_len: int,
               question_template: str, answer_prefix: str, over_budget: str = "error"
               ) -> tuple[list[dict], dict[str, int]]:
  """The records that fit the segment budgets, and what happened to the others.

  ``over_budget``: ``error`` raises on the first record over a budget (naming the budget field);
  ``drop`` leaves out every record with a segment over its budget (CODI's code drops over-long
  records); ``truncate_cot`` keeps records whose CoT alone is too long (``encode`` with
  ``truncate_cot=True`` cuts it to ``cot_len`` tokens) and drops the rest. Counts: records
  dropped per budget field that failed first (``data.q_len``, ``data.cot_len``,
  ``data.ans_len``) and ``truncated``.
  """
  if over_budget not in OVER_BUDGET:
    raise ConfigError("data.over_budget", over_budget, f"one of {OVER_BUDGET}")
  prefix = encode_text(tok, answer_prefix)
  kept, counts = [], {"data.q_len": 0, "data.cot_len": 0, "data.ans_len": 0, "truncated": 0}
  for i, ex in enumerate(examples):
    rec = as_cot_record(ex, f"examples[{i}]")
    q, c, a, _ = _segments(tok, rec, question_template, prefix)
    over = [(f, len(ids), b) for f, ids, b in (("data.q_len", q, q_len),
                                               ("data.cot_len", c, cot_len),
                                               ("data.ans_len", a, ans_len)) if len(ids) > b]
    if over and over_budget == "error":
      field, need, budget = over[0]
      raise ConfigError(field, budget, f">= {need} tokens for examples[{i}] "
                        f"({rec['question'][:40]!r}); raise the budget, filter the data or set "
                        "data.over_budget to drop / truncate_cot")
    if over and (over_budget == "drop" or [f for f, _, _ in over] != ["data.cot_len"]):
      counts[over[0][0]] += 1
      continue
    counts["truncated"] += bool(over)
    kept.append(rec)
  return kept, counts


def encode(tok, examples: Sequence[dict], *, q_len: int, cot_len: int, ans_len: int,
           question_template: str, answer_prefix: str,
           truncate_cot: bool = False) -> dict[str, np.ndarray]:
  """Stacked ``q_*``, ``cot_*``, ``ans_*`` arrays ``[N, L]`` (see the module docstring); with
  ``truncate_cot`` a CoT over ``cot_len`` tokens keeps its first ``cot_len``."""
  n = len(examples)
  out = {f"{s}_{k}": np.zeros((n, length), np.int32)
         for s, length in (("q", q_len), ("cot", cot_len), ("ans", ans_len))
         for k in ("ids", "mask")}
  out["ans_loss"] = np.zeros((n, ans_len), np.int32)
  prefix = encode_text(tok, answer_prefix)
  for i, ex in enumerate(examples):
    ex = as_cot_record(ex, f"examples[{i}]")
    q, c, a, start = _segments(tok, ex, question_template, prefix)
    c = c[:cot_len] if truncate_cot else c
    for name, ids, budget in (("data.q_len", q, q_len), ("data.cot_len", c, cot_len),
                              ("data.ans_len", a, ans_len)):
      if len(ids) > budget:
        raise ConfigError(name, budget, f">= {len(ids)} tokens for examples[{i}] "
                          f"({ex['question'][:40]!r}); raise the budget or filter the data")
    out["q_ids"][i] = tok.pad_token_id
    out["q_ids"][i, q_len - len(q):], out["q_mask"][i, q_len - len(q):] = q, 1
    for seg, ids in (("cot", c), ("ans", a)):
      out[f"{seg}_ids"][i] = tok.pad_token_id
      out[f"{seg}_ids"][i, :len(ids)], out[f"{seg}_mask"][i, :len(ids)] = ids, 1
    out["ans_loss"][i, start:len(a)] = 1
  return out


def lengths_needed(tok, examples: Sequence[dict], question_template: str,
                   answer_prefix: str) -> dict[str, int]:
  """The smallest ``q_len``, ``cot_len``, ``ans_len`` that fit every example."""
  recs = [as_cot_record(e) for e in examples]
  prefix = len(encode_text(tok, answer_prefix))
  return {"q_len": max(len(prompt_ids(tok, r["question"], question_template)) for r in recs),
          "cot_len": max(len(encode_text(tok, r["cot"] + " ")) for r in recs),
          "ans_len": max(prefix + len(encode_text(tok, " " + r["answer"])) + 1 for r in recs)}
