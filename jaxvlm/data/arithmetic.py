"""Synthetic multi-digit addition with step-by-step answers in GSM8K format.

A problem ``47+85`` has the answer ``7+5=12 4+8+1=13 #### 132``: one column sum per digit,
least significant first, each including the carry, then ``#### <result>`` as in GSM8K. Train
and held-out problems are disjoint sets of operand pairs drawn by a seeded generator.
"""

from __future__ import annotations

import numpy as np


def solve(a: int, b: int) -> str:
  """The step-by-step GSM8K-style answer for ``a + b``."""
  da, db = str(a)[::-1], str(b)[::-1]
  steps, carry = [], 0
  for i in range(max(len(da), len(db))):
    x, y = int(da[i]) if i < len(da) else 0, int(db[i]) if i < len(db) else 0
    total = x + y + carry
    steps.append(f"{x}+{y}" + (f"+{carry}" if carry else "") + f"={total}")
    carry = total // 10
  return " ".join(steps) + f" #### {a + b}"


def make_splits(digits: int, num_train: int, num_test: int, seed: int = 0
                ) -> tuple[list[dict], list[dict]]:
  """Disjoint train / held-out lists of ``{"question", "answer"}`` with ``digits``-digit operands."""
  lo, hi = 10 ** (digits - 1), 10 ** digits
  space = (hi - lo) ** 2
  if num_train + num_test > space:
    raise ValueError(f"num_train + num_test: got {num_train + num_test}, expected <= {space} "
                     f"distinct {digits}-digit pairs")
  flat = np.random.default_rng(seed).choice(space, num_train + num_test, replace=False)
  pairs = [(lo + int(f) // (hi - lo), lo + int(f) % (hi - lo)) for f in flat]
  items = [{"question": f"{a}+{b}", "answer": solve(a, b)} for a, b in pairs]
  return items[:num_train], items[num_train:]


def solve_chain(operands: list[int], ops: list[str], modulus: int = 0) -> str:
  """Left-to-right steps ``a*b=x x+c=y ...`` of a chain of binary operations, then ``#### N``;
  with ``modulus > 0`` every step's result is taken modulo it (``3*4=2`` for modulus 10)."""
  value, steps = operands[0], []
  for op, x in zip(ops, operands[1:]):
    new = {"+": value + x, "-": value - x, "*": value * x}[op]
    new = new % modulus if modulus else new
    steps.append(f"{value}{op}{x}={new}")
    value = new
  return " ".join(steps) + f" #### {value}"


def make_multistep_splits(num_train: int, num_test: int, num_operands: int = 4,
                          max_operand: int = 9, seed: int = 0, *, ops: str = "",
                          modulus: int = 0) -> tuple[list[dict], list[dict]]:
  """Disjoint train / held-out multi-operand problems ``a*b+c-d`` (operands 1..``max_operand``,
  evaluated left to right).

  ``ops=""``: the first operation is ``*``, the rest ``+`` or ``-`` (left to right = the usual
  precedence). Otherwise every operation is drawn from the characters of ``ops`` (e.g. ``"+-*"``)
  and the question still reads left to right. ``modulus > 0`` takes every step modulo it
  (``solve_chain``): small step results, so each step is a short lookup while the answer still
  needs every intermediate value. A small model answering directly (No-CoT) fails where one
  writing the steps (CoT) succeeds. Items are ``{"question", "answer": "steps #### N"}``.
  """
  if num_operands < 3:
    raise ValueError(f"num_operands: got {num_operands}, expected >= 3")
  if ops and set(ops) - set("+-*"):
    raise ValueError(f"ops: got {ops!r}, expected characters from '+-*'")
  choices = list(ops) or ["+", "-"]
  space = max_operand ** num_operands * len(choices) ** (num_operands - 1 - (not ops))
  if num_train + num_test > space:
    raise ValueError(f"num_train + num_test: got {num_train + num_test}, expected <= {space}")
  rng = np.random.default_rng(seed)
  seen, items = set(), []
  while len(items) < num_train + num_test:
    operands = [int(x) for x in rng.integers(1, max_operand + 1, num_operands)]
    drawn = [str(o) for o in rng.choice(choices, num_operands - 1 - (not ops))]
    chain = drawn if ops else ["*"] + drawn
    question = "".join(f"{o}{x}" for o, x in zip([""] + chain, operands))
    if question in seen:
      continue
    seen.add(question)
    items.append({"question": question, "answer": solve_chain(operands, chain, modulus)})
  return items[:num_train], items[num_train:]
