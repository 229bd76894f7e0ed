"""Smoke test: the SGL shared-vision experiment (``configs/sgl.py:tiny``) end to end, shortened by
config overrides only (2 training steps per model, 4 test samples, short generations): every
table in report.md, the per-run files, shared vision holding for the trained pair, and a case
list that matches no dataset refused by name. One CPU device, XLA backend optimisation off."""

import json
import os
import subprocess
import sys

from jaxvlm.config import REPO_ROOT

SHORT = {"decoder.steps": 2, "guide.steps": 2, "decoder.batch_size": 4, "guide.batch_size": 4,
         "decoder.hf_config.llm_config.hidden_size": 32,
         "decoder.hf_config.llm_config.num_hidden_layers": 2,
         "guide.hf_config.llm_config.hidden_size": 16,
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
  assert metrics["notes"]["shared_vision"] is True
  assert list(metrics["hybrid"]) == ["normal", "two_pass", "prompt"]
  assert list(metrics["guide_modes"]) == ["baseline", "short_rationale", "short_cot"]
  assert list(metrics["keep"]) == ["1.0_guide", "0.4_guide", "0.4_random", "0.09_guide",
                                   "0.09_random"]
  assert metrics["keep"]["0.09_guide"]["mean_kept"] == 1 and metrics["early_exit"]["n"] == 4
  assert set(metrics["attention_comparison"]) >= {"avg_l1", "median_l1", "avg_jsd",
                                                   "avg_top4_overlap", "top1_same_count",
                                                   "avg_entropy_delta",
                                                   "changed_small_answer_count",
                                                   "changed_large_answer_count"}
  report = (run / "report.md").read_text()
  for title in ("References", "Hybrid", "guide modes", "Keep sweep", "Early exit",
                "change attention"):
    assert title in report
  runs = run / "runs"
  for name in ("sv_baseline", "keep0.09_random", "hybrid_two_pass"):
    assert len(json.loads((runs / f"{name}.json").read_text())) == 4
    assert json.loads((runs / f"{name}.summary.json").read_text())["n"] == 4
  stats = json.loads((runs / "sv_short_cot_stats.json").read_text())
  assert len(stats["distributions"]) == 4 and len(stats["distributions"][0]) == 16
  # a case list of question ids the synthetic test split does not have
  cases = tmp_path / "cases.json"
  cases.write_text(json.dumps([{"question_id": 10 ** 9}]))
  proc = _run(tmp_path / "run", **{"data.case_list": str(cases), "data.dataset": "synthetic"})
  assert proc.returncode == 2 and "case_list" in proc.stderr and "no loaded dataset" in proc.stderr
