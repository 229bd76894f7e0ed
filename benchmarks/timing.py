"""Timing helpers shared by the benchmark scripts: warm-up, then the median of repeated runs."""

from __future__ import annotations

import collections
import gzip
import json
import os
import pathlib
import platform
import statistics
import time
from typing import Any, Callable


def median_seconds(fn: Callable[[], Any], *, warmup: int = 2, iters: int = 5,
                   sync: Callable[[Any], Any] | None = None) -> float:
  """Median wall time of ``fn()``; ``sync(result)`` blocks until the device is done."""
  sync = sync or _block
  for _ in range(warmup):
    sync(fn())
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    sync(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def _block(x):
  import jax
  return jax.block_until_ready(x)


def torch_sync(_):
  import torch
  if torch.cuda.is_available():
    torch.cuda.synchronize()


def environment() -> dict:
  """Device and library versions for RESULTS.md."""
  import jax
  info = {"jax": jax.__version__, "device": str(jax.devices()[0].device_kind),
          "python": platform.python_version()}
  try:
    import torch
    import transformers
    info.update(torch=torch.__version__, transformers=transformers.__version__)
  except ImportError:
    pass
  return info


def write_results(name: str, rows: list[dict], extra: dict | None = None) -> str:
  """Writes ``$OUT/<name>.json`` (or ./<name>.json) and returns the path."""
  path = os.path.join(os.environ.get("OUT", "."), f"{name}.json")
  with open(path, "w") as f:
    json.dump({"environment": environment(), "rows": rows, **(extra or {})}, f, indent=2)
  return path


def trace_summary(log_dir, top: int = 8, gaps: int = 0) -> dict:
  """GPU kernel time in the newest ``jax.profiler`` trace under ``log_dir``: the busy time, the
  span from the first kernel's start to the last one's end, their ratio, the ``top`` kernels by
  total time and the ``gaps`` longest idle stretches between kernels (offset from the first
  kernel, length, the kernels on either side: where the device waited for the host)."""
  found = sorted(pathlib.Path(log_dir).glob("plugins/profile/*/*.trace.json.gz"))
  if not found:
    raise FileNotFoundError(f"no jax.profiler trace (plugins/profile/*/*.trace.json.gz) under "
                            f"{log_dir}")
  path = found[-1]
  events = json.load(gzip.open(path))["traceEvents"]
  meta = lambda kind: {(e["pid"], e.get("tid")) if kind == "thread_name" else e["pid"]:
                       e["args"]["name"] for e in events
                       if e.get("ph") == "M" and e.get("name") == kind}
  process, thread = meta("process_name"), meta("thread_name")
  # kernels sit on the device's "Stream #..." lines ("XLA Ops" / "XLA Modules" repeat them)
  kernels = sorted((e for e in events if e.get("ph") == "X" and "dur" in e
                    and "GPU" in process.get(e["pid"], "")
                    and thread.get((e["pid"], e.get("tid")), "").startswith("Stream")),
                   key=lambda e: e["ts"])
  if not kernels:
    return {"kernels": 0, "device_lines": sorted({v for (pid, _), v in thread.items()
                                                   if "GPU" in process.get(pid, "")})}
  busy = sum(e["dur"] for e in kernels)
  t0 = kernels[0]["ts"]
  span = max(e["ts"] + e["dur"] for e in kernels) - t0
  by_name = collections.Counter()
  for e in kernels:
    by_name[e["name"][:60]] += e["dur"]
  idle = sorted(((b["ts"] - a["ts"] - a["dur"], a, b) for a, b in zip(kernels, kernels[1:])),
                key=lambda g: -g[0])[:gaps]
  return {"kernels": len(kernels), "device_ms": busy / 1e3, "span_ms": span / 1e3,
          "busy_share": busy / span,
          "top_kernels_ms": {k: v / 1e3 for k, v in by_name.most_common(top)},
          "gaps": [dict(at_ms=(b["ts"] - t0) / 1e3, ms=g / 1e3, after=a["name"][:50],
                        before=b["name"][:50]) for g, a, b in idle]}


def markdown_table(rows: list[dict]) -> str:
  keys = list(rows[0])
  lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
  for r in rows:
    lines.append("| " + " | ".join(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k])
                                   for k in keys) + " |")
  return "\n".join(lines)


def per_call_seconds(fn: Callable, *args, iters: int = 10, reps: int = 7) -> float:
  """Median seconds per call of a jitted ``fn`` (``iters`` back-to-back calls per repeat)."""
  return median_seconds(lambda: [fn(*args) for _ in range(iters)], iters=reps) / iters


def try_per_call_seconds(fn: Callable, *args, **kw) -> tuple[float, str]:
  """``per_call_seconds`` or ``(nan, error)``: a missing optional baseline must not stop a run."""
  try:
    return per_call_seconds(fn, *args, **kw), ""
  except Exception as e:  # noqa: BLE001 -- reported in the benchmark's notes
    return float("nan"), f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
