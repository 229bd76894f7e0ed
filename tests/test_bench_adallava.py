"""benchmarks/bench_adallava.py --tiny: the CPU smoke run of the AdaLLaVA latency benchmark."""

from __future__ import annotations

import json

import pytest

# compile-bound (tiny shapes, eager ops): XLA's cheap compile mode (conftest)
pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.mark.parametrize("granularity", ["layer", "head"])
def test_bench_adallava_tiny(tmp_path, monkeypatch, granularity):
  from benchmarks import bench_adallava
  monkeypatch.setenv("OUT", str(tmp_path))
  out = bench_adallava.main(["--tiny", "--batch", "2", "--text", "6", "--new", "3",
                             "--iters", "1", "--granularity", granularity])
  rows = out["rows"]
  assert [r["budget"] for r in rows] == [1.0, 0.75, 0.5, 0.25]
  assert [r["visual_tokens"] for r in rows] == [16, 12, 8, 4]  # round(16 b)
  assert [r["layers"] for r in rows] == [4, 3, 2, 1]  # max(floor(4 b), prefix 1)
  # 4 KV-head groups per layer; head granularity: U = floor(16 b) - 4 units in ceil(U / 4)
  # layers, all whole at these budgets (the same layers)
  assert [r["units"] for r in rows] == [16, 12, 8, 4]
  assert all(r["ours_ms"] > 0 and r["transformers_full_ms"] > 0 for r in rows)
  assert out["case"]["new_tokens_ours"] == out["case"]["new_tokens_transformers"] == 3
  assert out["case"]["granularity"] == granularity
  name = "adallava.json" if granularity == "layer" else "adallava_head.json"
  saved = json.loads((tmp_path / name).read_text())
  assert saved["rows"] == rows and set(saved["targets"]) >= {"met", "ours_0.5_over_ours_1.0"}


def test_run_adallava_real_tiny(tmp_path, monkeypatch):
  """The GPU script's code path at the tiny shape: folder, data, llava7b preset, transformers."""
  from benchmarks import run_adallava_real as real
  # the preset's child process inherits this environment (restored afterwards)
  monkeypatch.setenv("XLA_PYTHON_CLIENT_ALLOCATOR", "platform")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
  monkeypatch.setattr(real, "CACHE_DIR", str(tmp_path / "jax_cache"))
  out = real.main([str(tmp_path / "out"), "--size", "tiny"])
  saved = json.loads((tmp_path / "out" / "adallava_real.json").read_text())
  assert saved["met"] == out["met"] and set(out["met"]) == {"speedup_1.5x", "half_budget_0.6x",
                                                            "no_inversions"}
  token, latency = out["rows"]["token"], out["rows"]["latency"]
  assert [(r["latency_budget"], r["token_budget"]) for r in token] == [
      (1.0, 0.25), (1.0, 0.5), (1.0, 1.0)]
  assert [r["num_keep"] for r in token] == [4, 8, 16]  # round(16 b) of the 16 visual tokens
  assert [r["layers"] for r in latency] == [1, 2, 3, 4]  # floor(4 b), layer 0 always on
  assert all(a["flops"] < b["flops"] for rows in (token, latency) for a, b in zip(rows, rows[1:]))
  assert out["transformers_ms_per_batch"] > 0 and all(
      v > 0 for axis in out["ms_per_batch"].values() for v in axis.values())
  folder = tmp_path / "out" / "work" / "llava-1.5-7b-random"
  config = json.loads((folder / "config.json").read_text())
  assert config["text_config"]["vocab_size"] == 32064 and config["vision_feature_layer"] == -2
  assert json.loads((folder / "processor_config.json").read_text())["patch_size"] == 14
  instruct = json.loads((tmp_path / "out" / "work" / "data" / "instruct.json").read_text())
  assert [t["from"] for t in instruct[0]["conversations"]] == ["human", "gpt"] * 2
