"""benchmarks/bench_decode_step.py --tiny on CPU: every loop variant is timed and written, and
the trace summary reads a real jax.profiler trace."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_decode_step
from benchmarks.timing import trace_summary


def test_bench_decode_step_tiny(tmp_path, monkeypatch):
  monkeypatch.setenv("OUT", str(tmp_path))
  out = bench_decode_step.main(["--tiny", "--profile", str(tmp_path / "trace")])
  saved = json.loads((tmp_path / "decode_step.json").read_text())
  assert [r["variant"] for r in saved["rows"]] == [
      "fixed", "eos, test every 1", "eos, test every 4"] == [r["variant"] for r in out["rows"]]
  assert all(r["ms"] > 0 and r["weight_read_bound_ms"] > 0 for r in saved["rows"])
  assert set(saved["traces"]) == {r["variant"] for r in saved["rows"]}
  assert all(t["kernels"] == 0 for t in saved["traces"].values())  # CPU: no GPU kernel lines


def test_trace_summary_counts_stream_kernels_and_gaps(tmp_path):
  """Busy time, span and idle gaps from the device's stream lines only (its "XLA Ops" line
  repeats the kernels and must not count twice)."""
  import gzip

  meta = [dict(ph="M", pid=1, name="process_name", args=dict(name="/device:GPU:0")),
          dict(ph="M", pid=1, tid=7, name="thread_name", args=dict(name="Stream #7(compute)")),
          dict(ph="M", pid=1, tid=8, name="thread_name", args=dict(name="XLA Ops")),
          dict(ph="M", pid=2, name="process_name", args=dict(name="/host:CPU"))]
  kernel = lambda name, ts, dur, tid=7, pid=1: dict(ph="X", pid=pid, tid=tid, name=name, ts=ts,
                                                   dur=dur)
  events = meta + [kernel("gemm", 100, 50), kernel("norm", 160, 10), kernel("gemm", 400, 50),
                   kernel("op", 100, 350, tid=8), kernel("host", 0, 999, tid=3, pid=2)]
  folder = tmp_path / "plugins" / "profile" / "run"
  folder.mkdir(parents=True)
  with gzip.open(folder / "host.trace.json.gz", "wt") as f:
    json.dump({"traceEvents": events}, f)
  s = trace_summary(tmp_path, gaps=2)
  assert s["kernels"] == 3 and s["device_ms"] == 0.11 and s["span_ms"] == 0.35
  assert s["top_kernels_ms"] == {"gemm": 0.1, "norm": 0.01}
  assert [(g["at_ms"], g["ms"], g["after"], g["before"]) for g in s["gaps"]] == [
      (0.3, 0.23, "norm", "gemm"), (0.06, 0.01, "gemm", "norm")]


def test_trace_summary_names_a_folder_without_a_trace(tmp_path):
  with pytest.raises(FileNotFoundError, match=str(tmp_path)):
    trace_summary(tmp_path)
