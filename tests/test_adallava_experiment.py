"""AdaLLaVA end to end on a tiny real-format LLaVA folder: ``configs/adallava.py:tiny`` shortened
by config overrides (one CPU device, in a subprocess), then the trained model, the caches and the
config errors.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from jaxvlm.config import REPO_ROOT, load_config
from jaxvlm.errors import ConfigError, MissingFileError
from jaxvlm.generation import generate
from jaxvlm.methods import adallava as ada

sys.path.insert(0, str(REPO_ROOT))
from experiments import token_budget_sweep as sweep  # noqa: E402

# The base trains 10 steps on the instruction json, the AdaLLaVA fine-tune 4; 8 test questions
# (no test reads the base's accuracy: it only has to be a trained folder).
SHORT = {"base.train.steps": 10, "base.train.batch_size": 16, "base.optimizer.warmup_steps": 5,
         "base.train.checkpoint_every": 0, "train.steps": 4, "train.batch_size": 8,
         "train.checkpoint_every": 0, "data.num_train": 256, "data.num_test": 8,
         "data.max_new_tokens": 6, "sweep.token_budgets": "(0.25,1.0)",
         "sweep.latency_budgets": "(0.5,1.0)", "sweep.batch_size": 8,
         "sweep.latency_repeats": 1}


def _config(**extra):
  return load_config("configs/adallava.py:tiny",
                     [f"{k}={v}" for k, v in {**SHORT, **extra}.items()])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("adallava") / "run"
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_backend_optimization_level=0")
  subprocess.run([sys.executable, "experiments/token_budget_sweep.py", "--workdir", str(workdir)]
                 + [f"--config.{k}={v}" for k, v in SHORT.items()], cwd=REPO_ROOT, env=env,
                 check=True, timeout=900)
  return _config(), workdir


def test_both_sweeps_report_and_samples(run):
  config, workdir = run
  metrics = json.loads((workdir / "metrics.json").read_text())
  token, latency = metrics["sweeps"]["token"], metrics["sweeps"]["latency"]
  assert [(r["latency_budget"], r["token_budget"]) for r in token] == [(1.0, 0.25), (1.0, 1.0)]
  assert [(r["latency_budget"], r["token_budget"]) for r in latency] == [(0.5, 1.0), (1.0, 1.0)]
  assert [r["num_keep"] for r in token] == [4, 16] and [r["num_keep"] for r in latency] == [16, 16]
  assert [r["layers"] for r in token] == [4, 4]  # the token budget leaves the layers alone
  assert [r["layers"] for r in latency] == [2, 4]  # floor(4 b), layer 0 always on
  assert token[0]["flops"] < token[1]["flops"] and latency[0]["flops"] < latency[1]["flops"]
  for r in token + latency:
    assert 0 <= r["exact_match"] <= 1 and 0 <= r["strict_match"] <= 1 and r["latency_s"] > 0
  report = (workdir / "report.md").read_text()
  assert re.findall(r"^## (.+)$", report, re.M) == [
      "Token budget sweep (latency budget 1.0)", "Latency budget sweep (token budget 1.0)",
      "Trade-off", "Settings"]
  samples = sorted((workdir / "cache").glob("point_l0.50_t1.00-*/samples_vqav2.jsonl"))
  assert len(samples) == 1
  lines = [json.loads(x) for x in samples[0].read_text().splitlines()]
  assert len(lines) == 8
  s = lines[0]
  assert {"doc_id", "doc", "target", "resps", "filtered_resps", "exact_match", "strict_match",
          "flops_prefill", "flops_decode", "num_generated"} <= set(s)
  assert len(s["flops_decode"]) == max(s["num_generated"] - 1, 0)
  assert s["flops"] == s["flops_prefill"] + sum(s["flops_decode"])
  # the instruction json it trained on asks as the evaluation does (mix665k's VQA items)
  first = json.loads((workdir / "data" / "instruct.json").read_text())[0]["conversations"][0]
  assert first["value"].startswith("<image>\n")
  assert first["value"].endswith("?\nAnswer the question using a single word or phrase.")
  assert sweep.main(config, str(workdir))["sweeps"] == metrics["sweeps"]  # re-run: all cached


def test_changed_setting_never_reuses_a_cached_point(run):
  config, workdir = run
  base = sweep.result_settings(config)
  other = sweep.result_settings(_config(**{"data.max_new_tokens": 5}))
  files = sweep.data_files(config, str(workdir))
  from jaxvlm.runcache import RunCache
  cache = RunCache(str(workdir / "cache"))
  point = {"point": (1.0, 1.0)}
  assert cache.load("point_l1.00_t1.00", {**base, **point}, files) is not None
  assert cache.load("point_l1.00_t1.00", {**other, **point}, files) is None
  for key in ("model.adallava.shared_plan", "sweep.batch_size", "seed"):
    value = {"model.adallava.shared_plan": False, "sweep.batch_size": 4, "seed": 1}[key]
    changed = sweep.result_settings(_config(**{key: value}))
    assert cache.load("point_l1.00_t1.00", {**changed, **point}, files) is None, key


def test_trained_model_generates_at_both_knobs(run):
  config, workdir = run
  from jaxvlm.methods.adallava import evaluate
  model, processor, _ = sweep.adallava_model(config, str(workdir), str(workdir / "base" / "model"),
                                             sweep.instruct_files(config, str(workdir)))
  records, _ = sweep.test_records(config, str(workdir))
  batch, _ = evaluate.prepare_batches(processor, records[:4], 4)[0]
  tok = processor.tokenizer
  for lat, kb, k in [(1.0, 0.5, 8), (0.25, 1.0, 16), (0.5, 0.1, 2)]:
    inp = ada.budget_inputs(model, batch["input_ids"], batch["attention_mask"],
                            batch["pixel_values"], latency_budget=lat, token_budget=kb)
    assert (inp.num_keep == k).all()
    out = generate(model, inp.input_ids, inp.attention_mask, 4, eos_token_id=tok.eos_token_id,
                   pad_token_id=tok.pad_token_id, **inp.generate_kwargs())
    seq = np.asarray(out.sequences)
    np.testing.assert_array_equal(seq[:, :out.prompt_length], inp.input_ids)
    layers = ada.layer_plan(model, inp).sum(1)
    assert (layers == max(int(4 * lat), 1)).all()


def test_config_errors_name_the_field(tmp_path):
  for key, value, field in [("sweep.token_budgets", "(0.0,1.0)", "sweep.token_budgets"),
                            ("sweep.latency_budgets", "(1.5,)", "sweep.latency_budgets"),
                            ("model.adallava.granularity", "heads",
                             "model.adallava.granularity")]:
    with pytest.raises(ConfigError, match=re.escape(field)):
      sweep.validate(_config(**{key: value}))
  real = load_config("configs/adallava.py:llava7b")
  with pytest.raises(MissingFileError, match="model.path"):
    sweep.validate(real)
  folder = tmp_path / "llava"
  folder.mkdir()
  (folder / "config.json").write_text('{"model_type": "llava"}')
  with pytest.raises(ConfigError, match=r"model.hf_config"):  # the tiny overrides stay set
    sweep.validate(_config(**{"model.path": str(folder)}))
