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

import numpy as np
import pytest

from jaxvlm.config import REPO_ROOT, load_config
from jaxvlm.errors import ConfigError
from jaxvlm.methods.kava.method import METHODS
from jaxvlm.run import experiment_module

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
         "train.eval_batch_size": 4, "ablation.seeds": ""}
# One row per code path (CoT generation, No-CoT, sequential CODI, right-crop KV on raw distances,
# R-KV with the std normalisation, dense KV, full fine-tuning); the other preset rows only
# combine these loss terms. Half the rows, half the compile time.
RUN_ROWS = ["cot", "nocot", "codi", "pccot_codi_kv", "kava", "kava_dense", "full_kava"]
NUMBER = r"-?\d+(\.\d+)?"


def test_tiny_ablation_end_to_end(tmp_path):
  preset_rows = load_config("configs/kava.py:tiny").ablation.rows.split(",")
  assert set(RUN_ROWS) < set(preset_rows)
  cfg_rows = RUN_ROWS
  workdir = tmp_path / "run"
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_backend_optimization_level=0")
  subprocess.run([sys.executable, "experiments/kava_ablation.py", "--workdir", str(workdir)]
                 + [f"--config.{k}={v}" for k, v in SHORT.items()]
                 + [f"--config.ablation.rows={','.join(RUN_ROWS)}"], cwd=REPO_ROOT, env=env,
                 check=True, timeout=900)
  metrics = json.loads((workdir / "metrics.json").read_text())
  assert list(metrics["rows"]) == cfg_rows
  assert set(metrics) == {"rows", "lengths", "data", "seeds", "details"} and set(
      metrics["lengths"]) == {"q_len", "cot_len", "ans_len"} and metrics["seeds"] == [0]
  assert metrics["data"]["train_kept"] == metrics["data"]["train_records"] == 16
  for name in cfg_rows:
    row = metrics["rows"][name]["held-out"]
    assert 0.0 <= row["accuracy"] <= 1.0 and row["forward_passes"] >= 1.0
    d = metrics["details"][name]
    assert d["method"] in METHODS and d["lora"] == (not name.startswith("full_"))
    assert [h["step"] for h in d["history"]] == [1, 2]
    assert all(h["loss"] == h["loss"] for h in d["history"])  # not NaN
    assert d["settings"]["kava.method"] == d["method"] and d["settings"]["seed"] == 0
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
  for name in ("pccot_codi_kv", "kava", "kava_dense"):
    assert re.search(rf"\| {re.escape(metrics['details'][name]['label'])} \| {NUMBER} \|",
                     ablation)
  lora_full = next(v for k, v in tables.items() if k.startswith("Table 2"))
  for name in ("kava",):
    assert re.search(rf"\| {re.escape(metrics['details'][name]['label'])} \| {NUMBER} \| "
                     rf"{NUMBER} \| [+-]{NUMBER} \|", lora_full)
  assert "![loss curves](loss.png)" in report and (workdir / "loss.png").stat().st_size > 0
  assert report.count("<details>") == len(cfg_rows) and "- kava.kv_iterations = all" in report
  assert "16 of 16 kept" in report and "CODI offset auto (resolved: [1])" in report


def _row(label: str, acc: float, passes: float, seconds: float) -> dict:
  return {"label": label, "method": "kava", "lora": True, "terms": ["student_ce"],
          "iterations": 3, "train_seconds": seconds, "history": [], "settings": {},
          "eval": {"held-out": {"accuracy": acc, "forward_passes": passes, "samples": []}}}


def test_seeds_merge_into_mean_std_and_a_per_seed_table():
  exp = experiment_module("kava_ablation")
  per_seed = {0: {"kava": _row("KAVA", 0.30, 8.0, 10.0)},
              1: {"kava": _row("KAVA", 0.34, 7.0, 20.0)},
              2: {"kava": _row("KAVA", 0.26, 9.0, 30.0)}}
  assert exp.merge_seeds({0: per_seed[0]}) is per_seed[0]
  merged = exp.merge_seeds(per_seed)["kava"]
  e = merged["eval"]["held-out"]
  np.testing.assert_allclose([e["accuracy"], e["accuracy_std"], e["forward_passes"],
                              merged["train_seconds"]], [0.30, 0.04, 8.0, 20.0], rtol=1e-9)
  assert e["accuracy_per_seed"] == {"0": 0.30, "1": 0.34, "2": 0.26}
  assert per_seed[0]["kava"]["eval"]["held-out"]["accuracy"] == 0.30  # inputs untouched
  table = exp.seeds_table({"kava": merged}, "held-out", [0, 1, 2])
  assert "| KAVA | 30.0 | 34.0 | 26.0 | 30.0 | 4.0 |" in table.splitlines()
  c = load_config("configs/kava.py:tiny")
  notes = {"lengths": {"q_len": 9}}
  text = exp.report(c, {"kava": merged}, {"held-out": [{}] * 5}, notes, "", [0, 1, 2])
  assert "## Seeds (held-out)" in text and "| KAVA | 30.0 | 34.0 |" in text
  assert "(no `nocot` row: no gaps)" in text
  assert "## Seeds" not in exp.report(c, per_seed[0], {"held-out": []}, notes, "", [0])


def test_gaps_to_nocot_are_paired_per_seed_with_a_t_interval():
  exp = experiment_module("kava_ablation")
  per_seed = {s: {"nocot": _row("No-CoT", n, 5.0, 1.0), "kava": _row("KAVA", k, 8.0, 1.0),
                  "pccot": _row("PCCoT", p, 8.0, 1.0)}
              for s, n, k, p in [(0, 0.20, 0.25, 0.19), (1, 0.40, 0.46, 0.42),
                                 (2, 0.30, 0.34, 0.29)]}
  table = exp.gaps_table(exp.merge_seeds(per_seed), "held-out", [0, 1, 2]).splitlines()
  # KAVA gaps +5, +6, +4: mean 5, s = 1, half = t(0.975, 2) / sqrt(3) = 2.484
  assert "| KAVA | +5.0 | +6.0 | +4.0 | +5.0 | [+2.5, +7.5] | yes |" in table
  # PCCoT gaps -1, +2, -1: mean 0, the interval holds 0
  assert "| PCCoT | -1.0 | +2.0 | -1.0 | +0.0 | [-4.3, +4.3] | no |" in table
  assert not any(line.startswith("| No-CoT |") for line in table)


@pytest.mark.parametrize("seeds, expected", [("", [0]), ("3", [3]), ("0, 1,2", [0, 1, 2])])
def test_ablation_seeds(seeds, expected):
  c = load_config("configs/kava.py:tiny", [f"--config.ablation.seeds={seeds}"])
  assert experiment_module("kava_ablation").ablation_seeds(c) == expected


@pytest.mark.parametrize("seeds", ["0,a", "1,1", "0,-1"])
def test_bad_ablation_seeds_name_the_field(seeds):
  c = load_config("configs/kava.py:tiny", [f"--config.ablation.seeds={seeds}"])
  with pytest.raises(ConfigError, match="ablation.seeds"):
    experiment_module("kava_ablation").ablation_seeds(c)


def test_base_key_follows_pretraining_not_the_rows_lr_or_split_sizes():
  exp = experiment_module("kava_ablation")
  key = lambda *o: exp.base_settings(load_config("configs/kava.py:tiny", list(o)))
  assert key() == key("--config.optimizer.lr=1e-3") == key("--config.data.num_train=100",
                                                          "--config.data.num_test=10")
  assert key() != key("--config.data.max_operand=5")
  assert key() != key("--config.pretrain.lr=1e-3")
  assert key() != key("--config.optimizer.weight_decay=0.0")  # the base trains with it too
  # ... which holds because the base's problems, drawn first, do not depend on the split sizes
  from jaxvlm.data import arithmetic
  a, _ = arithmetic.make_multistep_splits(100 + 50, 10, seed=3)
  b, _ = arithmetic.make_multistep_splits(100 + 80, 30, seed=3)
  assert a[:100] == b[:100]
