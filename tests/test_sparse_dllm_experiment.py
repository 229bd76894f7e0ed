"""Smoke test: the adaptive_keep_ratio tiny preset end to end, and a user importance file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxvlm import run


@pytest.mark.usefixtures("fast_compile")  # compile-bound: XLA's cheap compile mode (conftest)
def test_tiny_preset(tmp_path):
  imp = tmp_path / "dream_importance.npy"
  np.save(imp, np.random.default_rng().random((28, 4)))
  workdir = tmp_path / "run"
  # shortened by overrides: 60 training steps (the loss still has to fall), 8 eval prompts
  _, summary = run.run_config("configs/adaptive_keep_ratio.py:tiny",
                              [f"--config.models.dream.importance_path={imp}",
                               "--config.quality.train_steps=60", "--config.quality.num_eval=8"],
                              str(workdir))
  metrics = json.loads((workdir / "metrics.json").read_text())
  report = (workdir / "report.md").read_text()
  for name, (layers, heads) in (("llada", (32, 8)), ("dream", (28, 4))):
    res = metrics["keep_ratio"][name]
    assert res["shape"] == [layers, heads]
    assert (workdir / f"keep_ratio_{name}.png").stat().st_size > 0
    exact = {r["select"]: r for r in res["modes"]["exact_mean"]}
    relative = {r["select"]: r for r in res["modes"]["relative"]}
    for select in (0.2, 0.3, 0.5, 0.8, 1.0):
      assert abs(exact[select]["actual_mean"] - select) < 1e-6
      assert relative[select]["heads_at_cap"] <= layers * heads
    assert relative[1.0]["actual_mean"] < 1.0
  assert metrics["keep_ratio"]["dream"]["importance_source"] == str(imp)
  assert "| 0.8 | 80.0% | 80.0% |" in report
  quality = metrics["quality"]
  assert quality["train_loss_last"] < quality["train_loss_first"]
  assert set(quality["modes"]) == {"uniform", "relative", "exact_mean"}
  for r in quality["modes"].values():
    assert 0.0 <= r["agreement_with_dense"] <= 1.0 and 0.0 < r["saved_per_sparse_step"] < 1.0
  assert set(summary["quality"]) == set(quality["modes"])
