"""Synthetic multi-step arithmetic word problems in the GSM8K-AUG format (``whynlp/gsm8k-aug``).

A problem is a short story of 2 to ``max_steps`` operations on one quantity, e.g. "Mia buys 4
boxes of pencils with 6 pencils in each. She gives 5 pencils to a friend. Then she finds 9 more
pencils. How many pencils does Mia have now?"; its CoT is one ``<<a op b=c>>`` step per operation
("<<4*6=24>> <<24-5=19>> <<19+9=28>>") and its answer the final number ("28"). The first step is
always a product; later ones add, take away, multiply by 2 or 3, or share equally (exact
division); every intermediate value stays positive. Train and test problems are disjoint
questions from one seeded generator. ``write_splits`` writes them as GSM8K-AUG jsonl
(``{"question", "cot", "answer"}`` per line), to be read back with
``jaxvlm.data.gsm8k.read_aug``.
"""

from __future__ import annotations

import json
import os

import numpy as np

from jaxvlm.errors import ConfigError
from jaxvlm.io import atomic_open

NAMES = (("Mia", "She"), ("Tom", "He"), ("Ravi", "He"), ("Lena", "She"), ("Omar", "He"),
         ("Yuki", "She"), ("Sam", "He"), ("Ana", "She"), ("Ben", "He"), ("Zoe", "She"))
ITEMS = ("pencils", "apples", "stickers", "marbles", "cookies", "cards", "shells", "beads")
CONTAINERS = ("boxes", "bags", "packs", "jars", "crates")


def _problem(rng: np.random.Generator, steps: int) -> dict:
  name, pron = NAMES[rng.integers(len(NAMES))]
  item, box = ITEMS[rng.integers(len(ITEMS))], CONTAINERS[rng.integers(len(CONTAINERS))]
  a, b = int(rng.integers(2, 10)), int(rng.integers(2, 13))
  value = a * b
  text = [f"{name} buys {a} {box} of {item} with {b} {item} in each."]
  cot = [f"<<{a}*{b}={value}>>"]
  for _ in range(steps - 1):
    kind = ("add", "sub", "mul", "div")[rng.integers(4)]
    if kind == "div":
      divisors = [k for k in (2, 3, 4, 5) if value % k == 0]
      kind = "div" if divisors else "add"
    if kind == "sub" and value < 3:
      kind = "add"
    if kind == "add":
      c = int(rng.integers(1, 21))
      text.append(f"Then {pron.lower()} finds {c} more {item}.")
      new, step = value + c, f"<<{value}+{c}={value + c}>>"
    elif kind == "sub":
      c = int(rng.integers(1, min(value, 21)))
      text.append(f"{pron} gives {c} {item} to a friend.")
      new, step = value - c, f"<<{value}-{c}={value - c}>>"
    elif kind == "mul":
      k = int(rng.integers(2, 4))
      text.append(f"{pron} then gets {'twice' if k == 2 else 'three times'} as many {item} as "
                  f"{pron.lower()} has.")
      new, step = value * k, f"<<{value}*{k}={value * k}>>"
    else:
      k = int(divisors[rng.integers(len(divisors))])
      text.append(f"{pron} shares them equally among {k} friends, keeping one share.")
      new, step = value // k, f"<<{value}/{k}={value // k}>>"
    value = new
    cot.append(step)
  text.append(f"How many {item} does {name} have now?")
  return {"question": " ".join(text), "cot": " ".join(cot), "answer": str(value)}


def make_splits(num_train: int, num_test: int, max_steps: int = 4, seed: int = 0
                ) -> tuple[list[dict], list[dict]]:
  """Disjoint train / test lists of ``{"question", "cot", "answer"}`` problems of 2 to
  ``max_steps`` operations."""
  if max_steps < 2:
    raise ConfigError("data.max_steps", max_steps, "an int >= 2")
  if num_train < 1 or num_test < 1:
    raise ConfigError("data.num_train / data.num_test", (num_train, num_test), "ints >= 1")
  rng = np.random.default_rng(seed)
  seen, items = set(), []
  for _ in range(50 * (num_train + num_test)):
    p = _problem(rng, int(rng.integers(2, max_steps + 1)))
    if p["question"] not in seen:
      seen.add(p["question"])
      items.append(p)
    if len(items) == num_train + num_test:
      return items[:num_train], items[num_train:]
  raise ConfigError("data.num_train + data.num_test", num_train + num_test,
                    f"at most the {len(items)} distinct problems the generator found")


def write_splits(folder: str, num_train: int, num_test: int, max_steps: int = 4,
                 seed: int = 0) -> dict[str, str]:
  """Writes ``train.jsonl`` and ``test.jsonl`` (GSM8K-AUG) into ``folder``; returns their paths."""
  os.makedirs(folder, exist_ok=True)
  paths = {}
  for split, rows in zip(("train", "test"), make_splits(num_train, num_test, max_steps, seed)):
    paths[split] = os.path.join(folder, f"{split}.jsonl")
    with atomic_open(paths[split], "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in rows)
  return paths
