"""benchmarks/bench_adallava.py --tiny: the CPU smoke run of the AdaLLaVA latency benchmark."""

from __future__ import annotations

import json

import pytest


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
