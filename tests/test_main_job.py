"""The default ``jaxvlm run`` job (configs/sft.py:tiny) learns the synthetic task on CPU."""

from __future__ import annotations

import json
import os

from jaxvlm import cli


def test_default_job_learns(tmp_path):
  assert cli.main(["run", "--workdir", str(tmp_path)]) == 0
  metrics = json.loads((tmp_path / "metrics.json").read_text())
  # Margin: a random model never emits the right "#### N"; training must reach 30% exact match.
  assert metrics["accuracy_before"] <= 0.05
  assert metrics["accuracy_after"] >= metrics["accuracy_before"] + 0.3
  assert metrics["loss_last"] < metrics["loss_first"] / 4
  report = (tmp_path / "report.md").read_text()
  assert "exact-match accuracy" in report
  for name in ("loss.png", "metrics.jsonl", "config.json"):
    assert os.path.exists(tmp_path / name), name
  assert os.listdir(tmp_path / "checkpoints")
