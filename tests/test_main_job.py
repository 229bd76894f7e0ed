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


def test_hf_preset_is_the_kava_lora_setting():
  from jaxvlm.config import load_config
  cfg = load_config("configs/sft.py:hf", ["--config.model.path=/models/llama",
                                          "--config.data.train_path=/data/train.jsonl"])
  assert (cfg.lora.enabled, cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout) == (True, 128, 32.0, 0.1)
  assert tuple(cfg.lora.targets) == ("q_proj", "k_proj", "v_proj", "o_proj")
  assert cfg.model.path == "/models/llama" and cfg.data.source == "gsm8k"
  assert (cfg.model.dtype, cfg.model.param_dtype) == ("bfloat16", "float32")
