"""AdaLLaVA on a trained tiny LLaVA: the token-budget sweep end to end (``configs/adallava.py:tiny``
shortened by config overrides, one CPU device, in a subprocess), then the seed-004 regressions on
the model it trained (loaded back from the run folder) and the checkpoint / config errors.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from jaxvlm.config import REPO_ROOT, load_config
from jaxvlm.data import vlm_batches
from jaxvlm.errors import CheckpointError, ConfigError
from jaxvlm.generation import generate
from jaxvlm.layers import lora
from jaxvlm.methods import adallava as ada
from jaxvlm.methods.adallava import training

sys.path.insert(0, str(REPO_ROOT))
from experiments import token_budget_sweep as sweep  # noqa: E402

# The base learns the answer format (the first token is never EOS) in 40 steps; the AdaLLaVA
# fine-tune runs 4 steps; two budgets, 8 test questions.
SHORT = {"base.train.steps": 40, "base.train.batch_size": 16, "base.optimizer.warmup_steps": 5,
         "base.train.checkpoint_every": 0, "train.steps": 4, "train.batch_size": 8,
         "train.checkpoint_every": 0, "data.num_train": 256, "data.num_test": 8,
         "data.max_new_tokens": 6, "sweep.budgets": "(0.1,1.0)", "sweep.batch_size": 8,
         "sweep.latency_repeats": 1, "model.adallava.trainable": "lora"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("adallava") / "run"
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_backend_optimization_level=0")
  subprocess.run([sys.executable, "experiments/token_budget_sweep.py", "--workdir", str(workdir)]
                 + [f"--config.{k}={v}" for k, v in SHORT.items()], cwd=REPO_ROOT, env=env,
                 check=True, timeout=600)
  config = load_config("configs/adallava.py:tiny", [f"{k}={v}" for k, v in SHORT.items()])
  records, synthetic = sweep.test_records(config, str(workdir))
  model, tok, _, _ = sweep.train_models(config, str(workdir), records, synthetic)
  return config, workdir, model, tok, synthetic


def test_sweep_report_and_metrics(run):
  config, workdir, *_ = run
  metrics = json.loads((workdir / "metrics.json").read_text())
  rows = metrics["sweep"]
  assert [r["budget"] for r in rows] == [0.1, 1.0]
  assert [r["num_keep"] for r in rows] == [2, 16]  # max(1, round(b * 16))
  assert rows[0]["layers"] == 1.0 and rows[1]["layers"] == 4.0  # prefix only vs every layer
  assert rows[0]["flops"] < rows[1]["flops"] and metrics["tradeoff"][
      "flops_strictly_increasing_with_budget"]
  for r in rows:
    assert 0 <= r["vqa_accuracy"] <= 1 and 0 <= r["exact_match"] <= 1 and r["latency_s"] > 0
    assert r["num_generated"] >= 1 and r["first_token_eos"] == 0.0 and r["empty_answers"] == 0.0
  report = (workdir / "report.md").read_text()
  sections = re.findall(r"^## (.+)$", report, re.M)
  assert sections == ["Sweep", "Trade-off", "Generation diagnosis (seed 004)"]
  table = [x for x in report.splitlines() if re.match(r"\| (0\.1|1\.0) \|", x)]
  assert len(table) == 2 and all(len(x.strip("|").split("|")) == 10 for x in table)
  for png in ("acc_vs_flops.png", "acc_vs_latency.png"):
    assert (workdir / png).stat().st_size > 0
  lines = (workdir / "samples" / "budget_0.10.jsonl").read_text().splitlines()
  assert len(lines) == 8
  s = json.loads(lines[0])
  assert {"doc_id", "doc", "target", "resps", "filtered_resps", "num_generated", "gen_len",
          "layers", "num_keep", "flops"} <= set(s)
  assert s["resps"] == [s["filtered_resps"]] and s["resps"][0][0]  # non-empty answer
  assert (workdir / "adallava" / "checkpoints").is_dir()
  # a re-run loads everything from the run folder (no training, no evaluation)
  assert sweep.main(config, str(workdir))["sweep"] == rows


def _batch(model, tok, samples):
  b = vlm_batches.build_vlm_batch(samples, tok, model.vlm, with_answer=False)
  return b["input_ids"], b["attention_mask"], vlm_batches.generation_inputs(
      model.vlm, b)["pixel_values"]


@pytest.mark.parametrize("budget,k", [(1.0, 16), (0.5, 8), (0.01, 1)])
def test_trained_generation_never_empty(run, budget, k):
  _, _, model, tok, samples = run
  ids, mask, px = _batch(model, tok, samples[:4])
  inp = ada.budget_inputs(model, ids, mask, px, budget)
  assert (inp.num_keep == k).all()
  out = generate(model, inp.input_ids, inp.attention_mask, 6, eos_token_id=tok.eos_token_id,
                 pad_token_id=tok.pad_token_id, **inp.generate_kwargs())
  seq, num = np.asarray(out.sequences), np.asarray(out.num_generated)
  assert seq.shape == (4, inp.input_ids.shape[1] + 6)
  np.testing.assert_array_equal(seq[:, :out.prompt_length], inp.input_ids)  # prompt + new
  assert (num > 0).all() and (seq[:, out.prompt_length] != tok.eos_token_id).all()
  assert all(tok.decode(r).strip() for r in np.asarray(out.new_tokens))


def test_trained_batch_with_different_k_per_row_equals_rows_alone(run):
  _, _, model, tok, samples = run
  budgets = [0.1, 0.6, 1.0]
  ids, mask, px = _batch(model, tok, samples[:3])
  inp = ada.budget_inputs(model, ids, mask, px, budgets)
  np.testing.assert_array_equal(inp.num_keep, [2, 10, 16])
  lat = inp.input_ids == model.config.latency_token_id
  slot = np.argmax(lat, axis=1)
  valid = inp.attention_mask.astype(bool)
  # each row's latency token sits at its own position: the count of its valid tokens before it
  np.testing.assert_array_equal(inp.position_ids[np.arange(3), slot],
                                [valid[r, :slot[r]].sum() for r in range(3)])
  np.testing.assert_array_equal(inp.position_ids[np.arange(3), slot], 1 + inp.num_keep)
  out = generate(model, inp.input_ids, inp.attention_mask, 6, eos_token_id=tok.eos_token_id,
                 pad_token_id=tok.pad_token_id, **inp.generate_kwargs())
  plans = ada.layer_plan(model, inp)
  for r, b in enumerate(budgets):
    one = ada.budget_inputs(model, ids[r:r + 1], mask[r:r + 1], px[r:r + 1], b)
    alone = generate(model, one.input_ids, one.attention_mask, 6, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id, **one.generate_kwargs())
    np.testing.assert_array_equal(np.asarray(out.new_tokens)[r], np.asarray(alone.new_tokens)[0])
  assert plans.sum(1).tolist() == [1, 2, 4]  # max(floor(4 b), prefix 1) layers per row


def test_lora_fine_tune_keeps_base_weights_and_trains_heads(run):
  _, workdir, model, _, _ = run
  ckpt = workdir / "base" / "checkpoints"
  step = max(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
  base = ocp.StandardCheckpointer().restore(str(ckpt / str(step) / "state"))["params"]
  ours = model.vlm.language_model.model.layers[1].self_attn.q_proj
  assert isinstance(ours, lora.LoRALinear)
  np.testing.assert_array_equal(ours.base.kernel[...],
                                base["language_model.model.layers.1.self_attn.q_proj.kernel"])
  trainable = nnx.state(model, training.trainable_filter("lora"))
  names = {".".join(map(str, p)) for p, _ in nnx.to_flat_state(trainable)}
  assert any(n.startswith("scheduler") for n in names) and any("lora" in n for n in names)
  assert not any(n.startswith("vlm.vision_tower") for n in names)


def test_checkpoint_without_scheduler_head_is_refused(run):
  config, workdir, *_ = run
  training.check_checkpoint(str(workdir / "adallava"))  # a budget checkpoint passes
  with pytest.raises(CheckpointError, match=r"adallava.checkpoint: .*base.*scheduler"):
    training.check_checkpoint(str(workdir / "base"))
  with pytest.raises(CheckpointError, match=r"adallava.checkpoint: .*unit_scheduler"):
    training.check_checkpoint(str(workdir / "adallava"), granularity="head")  # a layer run's
  bad = load_config("configs/adallava.py:tiny", [f"{k}={v}" for k, v in SHORT.items()]
                    + [f"adallava_checkpoint={workdir / 'base'}"])
  with pytest.raises(CheckpointError, match=r"adallava_checkpoint: .*scheduler"):
    sweep.main(bad, str(workdir))


def test_config_errors_name_the_field(run):
  config, _, model, _, _ = run
  with pytest.raises(ConfigError, match=r"model.adallava.trainable: got 'lor'"):
    training.trainable_filter("lor")
  with pytest.raises(ConfigError, match=r"length: got 3"):
    ids = np.ones((1, 20), np.int32)
    ids[0, 1:17] = model.image_token_id
    ada.budget_inputs(model, ids, np.ones_like(ids), np.zeros((1, 3, 32, 32), np.float32), 1.0,
                      length=3)
  with pytest.raises(ConfigError, match=r"model.path"):
    real = load_config("configs/adallava.py:llava7b")
    sweep.main(real, "/nonexistent")
