"""benchmarks/bench_sgl.py --tiny on CPU: every keep, the 8B alone and the PyTorch anchor run and
the JSON is complete."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_sgl

# compile-bound (tiny shapes, few iterations): XLA's cheap compile mode (conftest); only ms > 0
# and speedup > 0 are asserted of the timings
pytestmark = pytest.mark.usefixtures("fast_compile")


def test_bench_sgl_tiny(tmp_path, monkeypatch):
  monkeypatch.setenv("OUT", str(tmp_path))
  out = bench_sgl.main(["--tiny"])
  saved = json.loads((tmp_path / "sgl.json").read_text())
  assert [r["run"] for r in saved["rows"]] == [
      "ours keep 1.0", "ours keep 0.4", "ours keep 0.09", "ours 8B alone, keep 1.0",
      "PyTorch 8B alone, keep 1.0"] == [r["run"] for r in out["rows"]]
  assert all(r["ms_per_batch"] > 0 and r["speedup"] > 0 for r in saved["rows"])
  assert saved["visual_tokens"] == 32
