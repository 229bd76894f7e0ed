"""Smoke test: the KL_BETA comparison (``configs/icd.py:tiny``) end to end, shortened by config
overrides only; report.md holds every section of seed 000's report with numbers, metrics.json
the fields, and a second run resumes from the cached models.

Like the KAVA smoke test, the run is ``python experiments/kl_beta_compare.py`` in a subprocess
on one CPU device with XLA's backend optimisation off (the time is compilation).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np

from jaxvlm.config import REPO_ROOT

SHORT = {"vlm.train.steps": 2, "vlm.train.batch_size": 2, "vlm.train.log_every": 1,
         "vlm.data.num_train": 12, "vlm.data.max_shots": 1,
         "vlm.model.hf_config.text_config.num_hidden_layers": 1,
         "data.num_pool": 10, "data.num_train": 8, "data.num_test": 4, "data.max_new_tokens": 2,
         "embedding.batch_size": 16, "sampler.num_candidates": 3,
         "infoscore.shots": 2, "infoscore.beam_size": 2, "infoscore.batch_size": 8,
         "runner.pad_to": 256, "runner.feature_bucket": 64,
         "policy.dim": 16, "train.batch_size": 8, "train.supervised_epochs": 1,
         "train.rce_epochs": 1, "train.grpo_epochs": 2, "data.val_share": 0.25,
         "compare.epochs": "(1,2)", "compare.shots": "(1,2)", "compare.eval_batch_size": 8}
SECTIONS = ("## Settings", "## Key findings", "### 1. Checkpoint weights",
            "### 2. Inference accuracy", "### 3. ICD index identity", "## Analysis",
            "## Training curves", "## Time per stage", "## Files")
NUMBER = r"[+-]?\d+(\.\d+)?"


def _run(workdir):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_backend_optimization_level=0")
  return subprocess.run([sys.executable, "experiments/kl_beta_compare.py", "--workdir",
                         str(workdir)] + [f"--config.{k}={v}" for k, v in SHORT.items()],
                        cwd=REPO_ROOT, env=env, check=True, timeout=900, capture_output=True,
                        text=True)


def test_kl_beta_compare_end_to_end(tmp_path):
  workdir = tmp_path / "run"
  _run(workdir)
  report = (workdir / "report.md").read_text()
  for title in SECTIONS:
    assert title in report, title
  acc = re.search(r"### 2\. Inference accuracy.*?\n\n(.*?)\n\n", report, re.S).group(1)
  rows = [x for x in acc.splitlines() if re.match(r"\| \d \|", x)]
  assert len(rows) == 2
  for line in rows:
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert all(re.fullmatch(NUMBER, c) for c in cells), line
  assert re.search(r"\*\*Identity rate\*\*: \d+\.\d\d%", report)
  assert re.search(r"of the parameters differ", report)
  for run in ("KL_BETA=0.12", "KL_BETA=0.15", "RandSampler"):  # analysis rows, shots 1 and 2
    assert len(re.findall(rf"^\| {run} \| \d \| \d+ \(", report, re.M)) == 2, run
  metrics = json.loads((workdir / "metrics.json").read_text())
  assert set(metrics["runs"]) == {"A", "B"} and metrics["runs"]["B"]["epoch"] == 2
  assert metrics["weights"]["overall"]["num_elements"] > 0
  for name in ("A", "B"):
    run = metrics["runs"][name]
    assert run["analysis"]["1"]["policy_entropy"] >= 0.0
  for stage in ("supervised", "rce", "grpo kl_beta=0.12", "grpo kl_beta=0.15"):
    assert all(np.isfinite(r["val_loss"]) for r in metrics["curves"][stage]), stage
  assert [r["epoch"] for r in metrics["curves"]["grpo kl_beta=0.15"]] == [1, 2]
  assert set(metrics["seconds"]) >= {"vlm", "beam_search", "supervised", "grpo", "icl_inference"}
  icl_dir = next((workdir / "cache").glob("icl-*"))
  for name in ("A", "B"):
    for shots in ("1", "2"):
      preds = json.loads((icl_dir / name / f"shot{shots}" / "predictions.json").read_text())
      assert len(preds) == 4 and all(len(p["icd_indices"]) == int(shots) for p in preds)
  assert 0.0 <= metrics["indices"]["1"]["identical_share"] <= 1.0
  policy = workdir / metrics["policy_folder"]
  steps = sorted(os.listdir(policy / "kl_0.15" / "grpo" / "checkpoints"))
  assert len([s for s in steps if s.isdigit()]) == 2  # a checkpoint per epoch
  # a second run loads every cached model and result: no training step is logged again
  again = _run(workdir)
  assert "loss=" not in again.stderr
  untimed = lambda text: re.sub(r"## Time per stage.*?## Files", "", text, flags=re.S)
  assert untimed((workdir / "report.md").read_text()) == untimed(report)


def test_cache_keys_follow_every_upstream_setting():
  """A retrained VLM keys new beams, rewards, policies and predictions; a new beam size keeps
  the VLM but not what is computed from the beams; new shot counts touch the predictions only."""
  from jaxvlm.config import load_config
  from jaxvlm.run import experiment_module
  from jaxvlm.runcache import fingerprint
  keys = experiment_module("kl_beta_compare").cache_keys
  spec = str(REPO_ROOT / "configs" / "icd.py") + ":tiny"
  prints = lambda *overrides: {part: fingerprint(settings) for part, settings in
                               keys(load_config(spec, list(overrides)), 6).items()}
  base = prints()
  changed = lambda *o: {part for part, f in prints(*o).items() if f != base[part]}
  assert changed("--config.vlm.train.steps=7") == set(base)
  assert changed("--config.infoscore.beam_size=3") == {"beams", "beam_rewards", "policy", "icl"}
  assert changed("--config.train.grpo_epochs=9") == {"policy", "icl"}
  assert changed("--config.compare.shots=(1,3)") == {"icl"}
