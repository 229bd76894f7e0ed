"""Two processes × 4 CPU devices (``jax.distributed``, gloo) train like one process × 8 devices.

The processes run ``tests/multiprocess_worker.py``: the tiny LLaMA, 3 Trainer steps on a
(data 2, fsdp 4) mesh, an Orbax checkpoint. Per-step losses, final parameters and every array
of the checkpoint (restored onto the mesh by the workers, and read back here as numpy through
``compare-checkpoints``) must equal the single-process run. The cross-process all-reduce (gloo)
sums in another order than the in-process one, so parameters may differ in the last bit.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np

from conftest import assert_rel_close
from jaxvlm.tools import compare_checkpoints

WORKER = pathlib.Path(__file__).resolve().parent / "multiprocess_worker.py"
TIMEOUT_S = 240  # a hung collective fails the test instead of blocking CI
RTOL = 1e-5  # of each array's largest entry (observed: 1.0e-6 at most, embedding rows)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _launch(out_dir: pathlib.Path, log: str, *args: str) -> subprocess.Popen:
  """A worker; XLA's cheap compile mode (LLVM -O0) in every run alike: the time is compilation."""
  out_dir.mkdir(parents=True, exist_ok=True)
  with open(out_dir / log, "w") as f:
    return subprocess.Popen([sys.executable, str(WORKER), str(out_dir), *args], stdout=f,
                            stderr=subprocess.STDOUT, env={**os.environ, "JAX_PLATFORMS": "cpu",
                                                           "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"})


def _wait_all(procs: dict[pathlib.Path, subprocess.Popen]) -> None:
  """Waits for every process (``TIMEOUT_S`` in all), kills the rest; fails with the log tails."""
  deadline = time.monotonic() + TIMEOUT_S
  try:
    for p in procs.values():
      p.wait(timeout=max(deadline - time.monotonic(), 0.1))
  except subprocess.TimeoutExpired:
    pass  # killed below, reported as exit -9
  finally:
    for p in procs.values():
      if p.poll() is None:
        p.kill()
        p.wait()
  failed = {log: p.returncode for log, p in procs.items() if p.returncode}
  assert not failed, "\n".join(f"{log}: exit {rc}\n{log.read_text()[-3000:]}"
                                for log, rc in failed.items())


def test_two_processes_equal_one_process(tmp_path):
  multi, single = tmp_path / "multi", tmp_path / "single"
  port = str(_free_port())
  procs = {multi / f"log{i}.txt": _launch(multi, f"log{i}.txt", "--devices", "4",
                                          "--num-processes", "2", "--process-id", str(i),
                                          "--port", port) for i in range(2)}
  procs[single / "log.txt"] = _launch(single, "log.txt", "--devices", "8")
  _wait_all(procs)
  a, b = np.load(multi / "result.npz"), np.load(single / "result.npz")
  assert sorted(a.files) == sorted(b.files)
  assert len(a["loss"]) == 3
  np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)
  for name in a.files:  # parameters, and the checkpoint's parameters, Adam moments, counts, rng
    assert_rel_close(a[name], b[name], RTOL, name)
  # The checkpoint holds the trained parameters (restored on the mesh, exactly) and the optimiser
  # state; read as numpy here, both runs' files agree as well.
  params = [k for k in a.files if k != "loss" and not k.startswith("ckpt/")]
  for name in params:
    np.testing.assert_array_equal(a[f"ckpt/params.{name}"], a[name])
  assert any(k.startswith("ckpt/opt_state.") for k in a.files)
  files = [compare_checkpoints.load_params(str(d / "run" / "checkpoints")) for d in (multi, single)]
  for k, v in files[0].items():
    np.testing.assert_array_equal(v, a[f"ckpt/params.{k}"])
  report = compare_checkpoints.compare(*files)
  overall, worst = report["overall"], max(r["relative_diff"] for r in report["params"])
  assert overall["num_params"] == len(params) and worst <= RTOL
  print(f"loss {a['loss']} (max diff {np.abs(a['loss'] - b['loss']).max():.1e}); checkpoint "
        f"parameters: max abs diff {overall['max_abs_diff']:.1e}, max relative {worst:.1e}, "
        f"{overall['n_differ']} / {overall['num_elements']} elements differ")
