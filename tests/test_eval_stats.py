"""mean_ci95 against a hand computation, and the SGL report's paired differences through it."""

import math

import numpy as np
import pytest

from jaxvlm.eval.stats import mean_ci95
from jaxvlm.run import experiment_module


def test_mean_ci95_by_hand():
  out = mean_ci95([1.0, 2.0, 6.0])  # mean 3, s = sqrt(7), t(0.975, 2) = 4.302652729749464
  half = 4.302652729749464 * math.sqrt(7.0) / math.sqrt(3.0)
  assert out["n"] == 3 and out["mean"] == pytest.approx(3.0)
  np.testing.assert_allclose(out["ci95"], [3.0 - half, 3.0 + half], rtol=1e-12)
  one = mean_ci95([0.5])
  assert one["mean"] == 0.5 and all(math.isnan(x) for x in one["ci95"])


def test_sgl_paired_difference_matches_by_question_id():
  paired = experiment_module("shared_vision").paired
  a = [{"question_id": 1, "accuracy": 1.0}, {"question_id": 2, "accuracy": 0.0},
       {"question_id": 3, "accuracy": 1.0}]
  b = [{"question_id": 3, "accuracy": 0.0}, {"question_id": 1, "accuracy": 0.0},
       {"question_id": 2, "accuracy": 0.0}]
  out = paired(a, b)  # differences 1, 1, 0 (matched by id, not by order)
  assert out["n"] == 3 and out["mean"] == pytest.approx(2 / 3)
  assert out == mean_ci95([1.0, 1.0, 0.0])
