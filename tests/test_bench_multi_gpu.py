"""benchmarks/bench_multi_gpu.py --tiny on 8 simulated CPU devices: checks pass, JSON complete."""

import argparse
import json

import numpy as np
import pytest

from benchmarks import bench_multi_gpu

ROW_KEYS = {"mode", "setting", "devices", "global_batch", "loss", "step_s", "tokens_per_s",
            "tokens_per_s_per_gpu", "efficiency", "compile_s", "device0_param_bytes"}
CHECK_KEYS = {"loss_rel_diff", "grad_norm_rel_diff", "params_max_abs_diff", "flip_fraction",
              "passed"}
MEMORY_KEYS = {"load_s", "devices", "param_bytes", "device0_param_bytes",
               "host_peak_rss_delta_bytes", "host_peak_anon_delta_bytes", "numpy_peak_bytes"}


def test_tiny_run_passes_every_check(tmp_path, capsys):
  bench_multi_gpu.main(["--tiny", "--out", str(tmp_path)])
  result = json.loads((tmp_path / "bench_multi_gpu.json").read_text())
  assert result["all_passed"], capsys.readouterr().out
  assert result["environment"]["devices"] == 8 and result["environment"]["platform"] == "cpu"
  for mode in ("full", "lora"):
    rows = result["train"][mode]["rows"]
    assert [r["setting"] for r in rows] == ["1 device, global batch", "1 device, per-GPU batch",
                                            "fsdp=8", "data=8"]
    for r in rows:
      assert ROW_KEYS <= set(r) and r["tokens_per_s"] > 0
      if r["devices"] == 8:
        assert CHECK_KEYS <= set(r["check"]) and r["check"]["passed"]
        assert r["check"]["params_max_abs_diff"] <= 1e-6 and r["check"]["flip_fraction"] == 0
    # fsdp=8 holds a slice of the weights on each device, data=8 a replica
    assert rows[2]["device0_param_bytes"] < rows[3]["device0_param_bytes"] / 4
  load = result["load"]
  assert load["shards"] > 1 and load["generate"]["tokens_equal"]
  sharded, single = load["sharded"], load["single"]
  assert MEMORY_KEYS <= set(sharded) and sharded["devices"] == 8
  # fsdp=8: device 0 holds about an eighth of the weights (norms are replicated)
  assert sharded["device0_param_bytes"] < single["device0_param_bytes"] / 4
  out = capsys.readouterr().out
  assert "| full | fsdp=8 | 8 | 8 | " in out and "tokens equal" in out


def test_compare_fails_on_a_changed_loss_or_flipped_update():
  ref = {"loss": 2.0, "grad_norm": 1.0, "params": {"['w']": np.zeros((4, 4), np.float32)}}
  args = argparse.Namespace(compute_dtype="float32")
  metrics = {"loss": 2.0, "grad_norm": 1.0}
  assert bench_multi_gpu._compare(ref, metrics, {"w": np.zeros((4, 4), np.float32)}, args)["passed"]
  flipped = np.zeros((4, 4), np.float32)
  flipped[1, 2] = 2 * bench_multi_gpu.OPT["lr"]  # one update of the opposite sign
  out = bench_multi_gpu._compare(ref, metrics, {"w": flipped}, args)
  assert not out["passed"] and out["flip_fraction"] == 1 / 16
  out = bench_multi_gpu._compare(ref, {"loss": 2.01, "grad_norm": 1.0},
                                 {"w": np.zeros((4, 4), np.float32)}, args)
  assert not out["passed"] and out["loss_rel_diff"] == pytest.approx(0.005)
