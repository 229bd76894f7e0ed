"""benchmarks/run_icd_real.py: the real-shape dry run of configs/icd.py:qwen25vl3b, run whole at
its tiny size on CPU (same code path), its cost model against the beam search it models, and the
real size's folder config."""

from __future__ import annotations

import collections
import json

import numpy as np
from PIL import Image

from benchmarks import run_icd_real
from jaxvlm.methods import icd
from jaxvlm.models import tiny


def test_beam_prompt_counts_match_the_beam_search():
  seen = collections.Counter()

  def prob_fn(rows, shot_lists):
    seen[shot_lists.shape[1]] += len(rows)
    return np.random.default_rng(len(rows)).random(len(rows))

  k, shots, beams, n = 6, 3, 2, 4
  icd.beam_search(prob_fn, np.arange(n), np.tile(np.arange(k), (n, 1)), shots, beams)
  expected = run_icd_real.beam_prompts(k, shots, beams)
  assert dict(seen) == {s: n * c for s, c in expected.items()}
  assert run_icd_real.images_in(expected) == 1 + 2 * 6 + 3 * 2 * 5 + 4 * 2 * 4


def test_extrapolation_pays_compilation_once():
  out = run_icd_real.extrapolate({"beam_search": 100.0, "vlm": 20.0}, {"beam_search": 40.0},
                                 {"beam_search": 10}, {"beam_search": 1000})
  assert out["stages"]["beam_search"]["full_s"] == 40.0 + 60.0 * 100
  assert out["stages"]["vlm"]["full_s"] == 20.0
  assert out["total_s"] == 6060.0


def test_real_size_is_the_qwen25vl3b_shape():
  tok = tiny.train_tokenizer("qwen2_5_vl", ["what is in the picture"] * 4, 300)
  hf = tiny.tiny_vlm_config("qwen2_5_vl", tok, **run_icd_real.REAL.vlm)
  t, v = hf["text_config"], hf["vision_config"]
  assert (t["vocab_size"], t["hidden_size"], t["num_hidden_layers"], t["num_key_value_heads"]) == (
      151936, 2048, 36, 2)
  assert (v["depth"], v["hidden_size"], v["patch_size"], v["window_size"]) == (32, 1280, 14, 112)
  assert hf["image_token_id"] == tok.convert_tokens_to_ids("<|image_pad|>")
  assert run_icd_real.REAL.clip["vision_config"]["num_hidden_layers"] == 24


def test_tiny_dry_run_end_to_end(tmp_path, monkeypatch):
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
  out, work = tmp_path / "out", tmp_path / "work"
  result = run_icd_real.main([str(out), "--work", str(work), "--size", "tiny", "--budget", "600"])
  assert result["returncode"] == 0, (out / "run.log").read_text()[-3000:]
  saved = json.loads((out / "icd_real.json").read_text())
  stages = {"vlm", "embeddings", "beam_search", "supervised", "rce", "beam_rewards", "grpo",
            "icl_inference"}
  assert set(saved["seconds"]) >= stages
  for stage in stages - {"vlm"}:
    s = saved["extrapolation"]["stages"][stage]
    assert s["units_full"] > s["units_measured"] > 0 and s["full_s"] > s["measured_s"] > 0
  sizes = {Image.open(p).size for p in (work / "inputs/okvqa/train2014/images").iterdir()}
  assert sizes == set(run_icd_real.TINY.image_sizes)
  assert sorted(p.name for p in out.iterdir()) == ["curves.png", "icd_real.json", "metrics.json",
                                                   "report.md", "run.log"]
  report = (out / "report.md").read_text()
  assert "| 4 |" in report and "RandSampler" in report and "Identity rate" in report
  config = json.loads((work / "inputs/vlm/config.json").read_text())
  assert config["model_type"] == "qwen2_5_vl"
