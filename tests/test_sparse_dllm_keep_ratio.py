"""Adaptive keep ratios: normalisation, relative weights, the three modes, loading."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxvlm.errors import ConfigError, ShapeError
from jaxvlm.methods.sparse_dllm import keep_ratio as kr


def _weights(rng, shape=(32, 8)):
  return kr.relative_weights(kr.normalize_importance(rng.gamma(2.0, 1.0, shape)))


def test_normalize_and_weights():
  rng = np.random.default_rng()
  scores = rng.normal(size=(28, 4))
  n = kr.normalize_importance(scores)
  assert n.min() == 0.0 and n.max() == 1.0
  lo, hi = np.percentile(scores, [5, 95])
  assert np.all(n[scores <= lo] == 0.0) and np.all(n[scores >= hi] == 1.0)
  w = kr.relative_weights(n, weight_floor=0.3)
  np.testing.assert_allclose(w.mean(), 1.0, atol=1e-12)
  np.testing.assert_allclose(w.max() / w.min(), 1 / 0.3, rtol=1e-9)
  assert np.all(kr.normalize_importance(np.full((2, 3), 7.0)) == 1.0)


@pytest.mark.parametrize("select", [0.05, 0.2, 0.3, 0.5, 0.8, 0.95, 1.0])
@pytest.mark.parametrize("shape", [(32, 8), (28, 4)])
def test_exact_mean(select, shape):
  rng = np.random.default_rng()
  w = _weights(rng, shape)
  keep = kr.keep_ratios(w, select, "exact_mean", min_keep=0.01)
  assert abs(keep.mean() - select) <= 1e-6
  assert keep.max() <= 1.0 and keep.min() >= 0.01
  order = np.argsort(w.ravel(), kind="stable")
  assert np.all(np.diff(keep.ravel()[order]) >= -1e-12)  # importance order preserved


def test_relative_matches_seed_shape():
  rng = np.random.default_rng()
  w = _weights(rng)
  means = {}
  for select in (0.2, 0.3, 0.5, 0.8, 1.0):
    keep = kr.keep_ratios(w, select, "relative")
    s = kr.keep_ratio_summary(keep, select, w)
    means[select] = s["actual_mean"]
    assert s["heads_at_cap"] <= s["num_heads"]
    if s["heads_at_cap"] == 0 and keep.min() > 0.01:
      assert abs(s["actual_mean"] - select) < 1e-12
  # Capping makes the mean fall short at high select, as in the seed table.
  assert means[1.0] < 1.0 and 1.0 - means[1.0] > 0.8 - means[0.8] >= 0.0
  np.testing.assert_allclose(kr.keep_ratios(w, 0.2, "relative"), np.clip(w * 0.2, 0.01, 1))


def test_uniform_and_errors():
  w = _weights(np.random.default_rng(), (4, 2))
  assert np.all(kr.keep_ratios(w, 0.4, "uniform") == 0.4)
  with pytest.raises(ConfigError, match="mode"):
    kr.keep_ratios(w, 0.4, "nope")
  with pytest.raises(ConfigError, match="select"):
    kr.keep_ratios(w, 1.5, "exact_mean")
  with pytest.raises(ShapeError, match="importance"):
    kr.check_importance(np.ones(5))


def test_load_importance(tmp_path):
  scores = np.random.default_rng().random((3, 2))
  np.save(tmp_path / "s.npy", scores)
  (tmp_path / "s.json").write_text(json.dumps({"importance": scores.tolist()}))
  np.testing.assert_allclose(kr.load_importance(str(tmp_path / "s.npy")), scores)
  np.testing.assert_allclose(kr.load_importance(str(tmp_path / "s.json")), scores)
  with pytest.raises(ConfigError, match="importance_path"):
    kr.load_importance(str(tmp_path / "missing.npy"))

