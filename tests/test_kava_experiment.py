"""Smoke test: the KAVA ablation (``configs/kava.py:tiny``) end to end, shortened by config
overrides only; report.md holds every row with numbers and metrics.json the fields.

The run is ``python experiments/kava_ablation.py`` in a subprocess on one CPU device (not the 8
simulated ones of conftest) with XLA's backend optimisation off: the time is compilation (one
train step and one generation function per row), and each of the two roughly halves it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from jaxvlm.config import REPO_ROOT, load_config
from jaxvlm.methods.kava.method import METHODS

# A 1-layer, 32-wide random base (no pretraining); 2 train steps per row; M 2, T 1 (CODI: T = M);
# LoRA without dropout (its random bits in every adapted projection of every pass double the
# compile time).
SHORT = {"model.hf_config.hidden_size": 32, "model.hf_config.intermediate_size": 64,
         "model.hf_config.num_hidden_layers": 1, "model.hf_config.num_attention_heads": 2,
         "model.hf_config.num_key_value_heads": 1,
         "pretrain.steps": 0, "pretrain.batch_size": 8, "pretrain.num_problems": 16,
         "data.num_train": 16, "data.num_test": 4, "data.num_operands": 3,
         "data.max_new_tokens_cot": 16, "data.max_new_tokens_answer": 4,
         "kava.num_latents": 2, "kava.iterations": 1, "lora.rank": 4, "lora.dropout": 0.0,
         "train.steps": 2, "train.batch_size": 8, "train.log_every": 1,
         "train.eval_batch_size": 4}
NUMBER = r"-?\d+(\.\d+)?"


def test_tiny_ablation_end_to_end(tmp_path):
  cfg_rows = load_config("configs/kava.py:tiny").ablation.rows.split(",")
  assert len(cfg_rows) == 13
  workdir = tmp_path / "run"
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_backend_optimization_level=0")
  subprocess.run([sys.executable, "experiments/kava_ablation.py", "--workdir", str(workdir)]
                 + [f"--config.{k}={v}" for k, v in SHORT.items()], cwd=REPO_ROOT, env=env,
                 check=True, timeout=900)
  metrics = json.loads((workdir / "metrics.json").read_text())
  assert list(metrics["rows"]) == cfg_rows
  assert set(metrics) == {"rows", "lengths", "details"} and set(metrics["lengths"]) == {
      "q_len", "cot_len", "ans_len"}
  for name in cfg_rows:
    row = metrics["rows"][name]["held-out"]
    assert 0.0 <= row["accuracy"] <= 1.0 and row["forward_passes"] >= 1.0
    d = metrics["details"][name]
    assert d["method"] in METHODS and d["lora"] == (not name.startswith("full_"))
    assert [h["step"] for h in d["history"]] == [1, 2]
    assert all(h["loss"] == h["loss"] for h in d["history"])  # not NaN
    assert d["config"]["kava"]["method"] == d["method"]
  # latent rows: 1 question pass + T Jacobi passes + answer tokens; CoT: one per token
  latent = metrics["rows"]["kava"]["held-out"]["forward_passes"]
  assert 1 + 1 + 1 <= latent <= 1 + 1 + 4
  assert metrics["details"]["codi"]["iterations"] == 2  # T = M
  report = (workdir / "report.md").read_text()
  tables = {title: body for title, body in re.findall(r"## (.+?)\n\n(.*?)(?=\n## |\Z)", report,
                                                      re.S)}
  main = tables["All rows"]
  for name in cfg_rows:
    label = metrics["details"][name]["label"]
    line = next(x for x in main.splitlines() if x.startswith(f"| {label} |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert all(re.fullmatch(NUMBER, c) for c in cells[4:]), line  # accuracy, passes, seconds
  ablation = tables["Table 1: ablation (LoRA)"]
  for name in ("pccot", "pccot_codi", "pccot_codi_kv", "pccot_codi_rkv", "kava", "pccot_kv"):
    assert re.search(rf"\| {re.escape(metrics['details'][name]['label'])} \| {NUMBER} \|",
                     ablation)
  lora_full = next(v for k, v in tables.items() if k.startswith("Table 2"))
  for name in ("cot", "nocot", "pccot", "kava"):
    assert re.search(rf"\| {re.escape(metrics['details'][name]['label'])} \| {NUMBER} \| "
                     rf"{NUMBER} \| [+-]{NUMBER} \|", lora_full)
  assert "![loss curves](loss.png)" in report and (workdir / "loss.png").stat().st_size > 0
  assert report.count("<details>") == len(cfg_rows)
