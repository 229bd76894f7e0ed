"""The KAVA experiment's config checks (``validate``: bad rows, sizes, budgets, method keys, all
refused before any work and naming the full key) and its run cache (a re-run with a changed
result-changing setting recomputes the affected base / rows and never shows an old result)."""

from __future__ import annotations

import json
import time

import pytest

from jaxvlm.config import load_config
from jaxvlm.errors import ConfigError, MissingFileError
from jaxvlm.run import experiment_module

# compile-bound (tiny shapes, eager ops): XLA's cheap compile mode (conftest)
pytestmark = pytest.mark.usefixtures("fast_compile")

EXP = experiment_module("kava_ablation")


@pytest.mark.parametrize("override, field", [
    ("ablation.rows=nocot,foo", "ablation.rows"), ("ablation.seeds=0,0", "ablation.seeds"),
    ("train.steps=0", "train.steps"), ("train.batch_size=0", "train.batch_size"),
    ("train.grad_accum=3", "train.batch_size"), ("data.num_test=0", "data.num_test"),
    ("data.num_train=-1", "data.num_train"), ("lora.rank=0", "lora.rank"),
    ("model.hf_config.hidden_size=0", "model.hf_config.hidden_size"),
    ("kava.codi_distance=huber", "kava.codi_distance"),
    ("kava.kv_distance=cosine", "kava.kv_distance"), ("kava.num_latents=0", "kava.num_latents"),
    ("kava.codi_offset=-1", "kava.codi_offset"), ("kava.codi_offset=first", "kava.codi_offset"),
    ("kava.codi_normalize=std", "kava.codi_normalize"), ("kava.importance=all", "kava.importance"),
    ("data.over_budget=skip", "data.over_budget"), ("data.source=gsm9k", "data.source"),
    ("data.q_len=-2", "data.q_len"), ("kava.projection=conv", "kava.projection"),
    ("lora.dropout=1.0", "lora.dropout")])
def test_validate_refuses_bad_settings_by_their_full_key(override, field):
  c = load_config("configs/kava.py:tiny", [f"--config.{override}"])
  start = time.perf_counter()
  with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
    EXP.validate(c)
  assert time.perf_counter() - start < 5


def test_validate_passes_every_preset_but_a_missing_model_folder():
  for preset in ("tiny", "smollm2"):
    c = load_config(f"configs/kava.py:{preset}", ["--config.model.path=" if preset == "tiny"
                                                  else "--config.model.path=/"])
    EXP.validate(c)
  with pytest.raises(MissingFileError, match="model.path"):
    EXP.validate(load_config("configs/kava.py:llama1b"))


# One 1-layer base, 0 pretraining steps; the No-CoT row (the cheapest to compile); 2 train steps.
SHRUNK = {"model.hf_config.hidden_size": 16, "model.hf_config.intermediate_size": 32,
          "model.hf_config.num_hidden_layers": 1, "model.hf_config.num_attention_heads": 2,
          "model.hf_config.num_key_value_heads": 1, "pretrain.steps": 0,
          "pretrain.num_problems": 8, "data.num_train": 8, "data.num_test": 4,
          "data.num_operands": 3, "data.max_new_tokens_answer": 3, "lora.rank": 2,
          "lora.dropout": 0.0, "train.steps": 2, "train.batch_size": 4, "train.log_every": 1,
          "train.eval_batch_size": 4, "ablation.rows": "nocot",
          "ablation.seeds": ""}


def _run(workdir, **changes):
  c = load_config("configs/kava.py:tiny", [f"--config.{k}={v}" for k, v in
                                           {**SHRUNK, **changes}.items()])
  EXP.validate(c)
  return EXP.main(c, str(workdir))


def test_changed_settings_never_reuse_an_old_row_or_base(tmp_path):
  _run(tmp_path)
  cache = EXP.runcache.RunCache(str(tmp_path / "cache"))
  assert len(cache.stored("base")) == 1 and cache.stored("row-nocot")[0]["train"]["steps"] == 2
  _run(tmp_path, **{"train.steps": 3})                     # a row setting: the row anew
  assert len(cache.stored("base")) == 1 and len(cache.stored("row-nocot")) == 2
  history = json.loads((tmp_path / "metrics.json").read_text())["details"]["nocot"]["history"]
  assert [h["step"] for h in history] == [1, 2, 3]  # not the cached 2-step row
  _run(tmp_path, **{"pretrain.num_problems": 12, "train.steps": 3})  # the base: base and row anew
  assert len(cache.stored("base")) == 2 and len(cache.stored("row-nocot")) == 3
  _run(tmp_path, **{"ablation.seeds": "0"})               # not a result setting: from the cache
  assert len(cache.stored("row-nocot")) == 3
