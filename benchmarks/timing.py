"""Timing helpers shared by the benchmark scripts: warm-up, then the median of repeated runs."""

from __future__ import annotations

import json
import os
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
