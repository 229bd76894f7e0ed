"""Smoke test: the SGL shared-vision experiment (``configs/sgl.py:tiny``) end to end, shortened by
config overrides only (2 training steps per model, 4 test samples, short generations): every
table in report.md, the per-run files keyed by their settings, shared vision holding for the
trained pair, a re-run reusing every result, and bad settings / a case list that matches no
dataset refused by name before any work. One CPU device, XLA backend optimisation off."""

import json
import os
import subprocess
import sys

from jaxvlm.config import REPO_ROOT

SHORT = {"decoder.steps": 2, "guide.steps": 2, "hybrid.steps": 2, "decoder.batch_size": 4,
         "guide.batch_size": 4, "hybrid.batch_size": 4,
         "decoder.hf_config.llm_config.hidden_size": 32,
         "decoder.hf_config.llm_config.num_hidden_layers": 2,
         "guide.hf_config.llm_config.hidden_size": 16,
         "hybrid.hf_config.llm_config.hidden_size": 16,
         "data.num_train": 16, "data.num_test": 4, "runs.batch_size": 4,
         "sgl.max_new_tokens": 3, "sgl.guide_max_new_tokens": 4}
ENV = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_backend_optimization_level=0")


def _run(workdir, **extra):
  args = [f"--config.{k}={v}" for k, v in {**SHORT, **extra}.items()]
  return subprocess.run([sys.executable, "experiments/shared_vision.py", "--workdir", str(workdir)]
                        + args, cwd=REPO_ROOT, env=ENV, capture_output=True, text=True,
                        timeout=900)


def test_tiny_shared_vision_end_to_end(tmp_path):
  proc = _run(tmp_path / "run")
  assert proc.returncode == 0, proc.stderr[-3000:]
  run = tmp_path / "run"
  metrics = json.loads((run / "metrics.json").read_text())
  assert metrics["notes"]["shared_vision"] is True and metrics["notes"]["towers_equal"] is True
  assert list(metrics["hybrid"]) == ["normal", "two_pass", "prompt"]
  assert list(metrics["guide_modes"]) == ["baseline", "short_rationale", "short_cot"]
  assert list(metrics["keep"]) == ["1.0_guide", "0.4_guide", "0.4_random", "0.09_guide",
                                   "0.09_random"]
  assert list(metrics["paired"]) == ["0.4", "0.09"]
  assert metrics["keep"]["0.09_guide"]["mean_kept"] == 1
  assert metrics["early_exit"]["with_exit"]["n"] == 4
  assert set(metrics["keep"]["0.4_guide"]["seconds_per_sample"]) >= {
      "preprocess", "vision", "guide_generation", "importance", "consistency", "selection"}
  assert set(metrics["attention_comparison"]) >= {"avg_l1", "median_l1", "avg_jsd",
                                                   "avg_top4_overlap", "top1_same_count",
                                                   "avg_entropy_delta",
                                                   "changed_small_answer_count",
                                                   "changed_large_answer_count"}
  report = (run / "report.md").read_text()
  for title in ("References", "Hybrid", "guide modes", "Keep sweep", "paired", "Early exit",
                "per stage", "change attention"):
    assert title in report
  # baseline and keep 0.4 with guide selection are the same settings: one folder
  assert metrics["guide_modes"]["baseline"]["folder"] == metrics["keep"]["0.4_guide"]["folder"]
  folders = {v["folder"] for group in ("guide_modes", "keep") for v in metrics[group].values()}
  assert len(folders) == 7 and all(os.path.basename(f).startswith("guided-") for f in folders)
  for f in folders:
    assert len(json.loads(open(os.path.join(f, "results.json")).read())) == 4
  stats = json.loads(open(os.path.join(metrics["guide_modes"]["short_cot"]["folder"],
                                       "stats.json")).read())
  assert len(stats["distributions"]) == 4 and len(stats["distributions"][0]) == 16
  # bad settings and a case list of question ids the test split lacks: refused before any work
  proc = _run(tmp_path / "bad", **{"data.max_num": 0})
  assert proc.returncode == 2 and "data.max_num" in proc.stderr
  assert not (tmp_path / "bad").exists()
  cases = tmp_path / "cases.json"
  cases.write_text(json.dumps([{"question_id": 10 ** 9}]))
  proc = _run(tmp_path / "run", **{"data.case_list": str(cases), "data.dataset": "synthetic"})
  assert proc.returncode == 2 and "case_list" in proc.stderr and str(10 ** 9) in proc.stderr
