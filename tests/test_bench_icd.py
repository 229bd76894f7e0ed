"""benchmarks/bench_icd.py --tiny on CPU: both sides run on one folder, agree, and the JSON is
complete."""

from __future__ import annotations

import json

from benchmarks import bench_icd


def test_bench_icd_tiny(tmp_path, monkeypatch):
  monkeypatch.setenv("OUT", str(tmp_path))
  out = bench_icd.main(["--tiny"])
  saved = json.loads((tmp_path / "icd.json").read_text())
  assert [r["metric"] for r in saved["rows"]] == [r["metric"] for r in out["rows"]]
  assert len(saved["rows"]) == 2 and all(r["ours"] > 0 and r["transformers"] > 0
                                         for r in saved["rows"])
  assert saved["agreement"]["greedy_tokens"] == 1.0
  assert saved["agreement"]["answer_logp_max_abs_diff"] < 1e-4
  assert saved["params"]["vision"] > 0 and saved["visual_tokens"] == [20, 20, 20, 20]
