"""Official VQA accuracy: leave-one-out min(1, matches/3) and the answer normalisation."""

from __future__ import annotations

import itertools
import random

import pytest

from jaxvlm.eval import normalize_answer, vqa_accuracy


@pytest.mark.parametrize("text,expected", [
    ("Two", "2"), ("the dog.", "dog"), ("  A red\tcar\n", "red car"), ("dont", "don't"),
    ("yes!", "yes"), ("1,000", "1000"), ("3.5", "3.5"), ("black-and-white", "black and white"),
    ("none", "0"), ("an apple", "apple")])
def test_normalize_answer(text, expected):
  assert normalize_answer(text) == expected


def _reference(pred, answers):
  """Direct leave-one-out definition on already-normal answers."""
  accs = [min(1.0, sum(a == pred for a in rest) / 3.0)
          for rest in (answers[:i] + answers[i + 1:] for i in range(len(answers)))]
  return sum(accs) / len(accs)


def test_accuracy_counts_leave_one_out():
  rng = random.Random(0)
  for _ in range(50):
    k = rng.randint(0, 10)
    answers = ["2"] * k + rng.choices(["cat", "dog", "red"], k=10 - k)
    rng.shuffle(answers)
    assert vqa_accuracy("two", answers) == pytest.approx(_reference("2", answers))
  assert vqa_accuracy("2", ["2"] * 3 + ["x"] * 7) == pytest.approx(0.9)  # 7*1 + 3*(2/3) / 10
  assert vqa_accuracy("2", ["2"] * 4 + ["x"] * 6) == 1.0
  assert vqa_accuracy("cat", ["dog"] * 10) == 0.0


def test_ground_truth_punctuation_only_when_answers_differ():
  # all identical: kept verbatim, so a prediction normalised to "t shirt" does not match "t-shirt"
  assert vqa_accuracy("t-shirt", ["t-shirt"] * 10) == 0.0
  assert vqa_accuracy("t-shirt", ["t-shirt"] * 9 + ["shirt"]) == 1.0
  assert all(vqa_accuracy(p, a) <= 1.0 for p, a in itertools.product(
      ["Yes", "no."], [["yes"] * 5 + ["no"] * 5, ["no"] * 10]))
