"""compare_distributions against a direct NumPy computation on fresh random rows."""

import numpy as np
import pytest

from jaxvlm.errors import ShapeError
from jaxvlm.methods.sgl import compare_distributions


def test_statistics_match_numpy():
  rng = np.random.default_rng()
  a, b = rng.random((7, 40)), rng.random((7, 40)) ** 3
  got = compare_distributions(a, b, top_k=16, answers_p=[("x", "y")] * 7,
                              answers_q=[("x", "y")] * 5 + [("z", "y"), ("z", "w")])
  p, q = a / a.sum(1, keepdims=True), b / b.sum(1, keepdims=True)
  m = (p + q) / 2
  jsd = 0.5 * (p * np.log(p / m)).sum(1) + 0.5 * (q * np.log(q / m)).sum(1)
  ent = lambda x: -(x * np.log(x)).sum(1)
  over = [len(set(np.argsort(-x)[:16]) & set(np.argsort(-y)[:16])) for x, y in zip(p, q)]
  np.testing.assert_allclose(got["avg_l1"], np.abs(p - q).sum(1).mean())
  np.testing.assert_allclose(got["median_l1"], np.median(np.abs(p - q).sum(1)))
  np.testing.assert_allclose(got["avg_jsd"], jsd.mean())
  np.testing.assert_allclose(got["avg_entropy_delta"], (ent(q) - ent(p)).mean())
  assert got["avg_top16_overlap"] == np.mean(over)
  assert got["top1_same_count"] == int((p.argmax(1) == q.argmax(1)).sum())
  assert got["changed_small_answer_count"] == 2 and got["changed_large_answer_count"] == 1
  same = compare_distributions(a, a)
  assert same["avg_l1"] == 0 and same["top1_same_count"] == 7 and same["avg_top16_overlap"] == 16
  with pytest.raises(ShapeError, match="q"):
    compare_distributions(a, b[:, :5])
