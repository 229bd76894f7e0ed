"""Config checks name the full dotted key, the value and what was expected."""

import os
import time

import ml_collections
import pytest

from jaxvlm import cli, validate
from jaxvlm.config import load_config
from jaxvlm.errors import ConfigError
from jaxvlm.run import experiment_module


def cfg():
  return ml_collections.ConfigDict({
      "ablation": {"rows": "nocot,kava"},
      "runs": {"top_k": 16, "modes": ("normal", "two_pass")},
      "model": {"adallava": {"min_budget": 0.5}},
      "sweep": {"budgets": (0.5, 1.0)},
      "train": {"batch_size": 8, "grad_accum": 2},
  })


def test_valid_config_passes():
  c = cfg()
  validate.choice(c, "ablation.rows", ["nocot", "kava", "pccot"])
  validate.choice(c, "runs.modes", ["normal", "two_pass", "prompt"])
  validate.in_range(c, "model.adallava.min_budget", 0, 1, low_open=True)
  validate.in_range(c, "sweep.budgets", 0, 1, low_open=True)
  validate.positive(c, "runs.top_k", "train.batch_size", "sweep.budgets")
  validate.divisible(c, "train.batch_size", "train.grad_accum")


def test_choice_names_the_bad_item_of_a_comma_list():
  c = cfg()
  c.ablation.rows = "nocot,foo"
  with pytest.raises(ConfigError, match=r"^ablation\.rows: got 'foo', expected one of"):
    validate.choice(c, "ablation.rows", ["nocot", "kava"])
  c.runs.modes = ("normal", "fast")
  with pytest.raises(ConfigError, match=r"^runs\.modes: got 'fast'"):
    validate.choice(c, "runs.modes", ["normal", "two_pass"])


@pytest.mark.parametrize("value", [0.0, 1.5, -1, "half", True, None, float("nan")])
def test_in_range_refuses_out_of_range_and_non_numbers(value):
  c = ml_collections.ConfigDict({"model": {"adallava": {"min_budget": value}}})
  with pytest.raises(ConfigError) as e:
    validate.in_range(c, "model.adallava.min_budget", 0, 1, low_open=True)
  assert e.value.field == "model.adallava.min_budget"
  assert str(e.value).endswith("expected a number in (0, 1]")


def test_in_range_checks_each_item_and_open_bounds():
  c = cfg()
  c.sweep.budgets = (0.5, 1.5)
  with pytest.raises(ConfigError, match=r"sweep\.budgets: got 1\.5, expected a number < 1 "):
    validate.in_range(c, "sweep.budgets", high=1, high_open=True)
  validate.in_range(c, "sweep.budgets", low=0.5)
  with pytest.raises(ConfigError, match=r"> 0\.5"):
    validate.in_range(c, "sweep.budgets", low=0.5, low_open=True)


def test_positive_refuses_zero():
  c = cfg()
  c.runs.top_k = 0
  with pytest.raises(ConfigError, match=r"^runs\.top_k: got 0, expected a number > 0$"):
    validate.positive(c, "train.batch_size", "runs.top_k")


def test_divisible():
  c = cfg()
  c.train.grad_accum = 3
  with pytest.raises(ConfigError, match=r"train\.batch_size: got 8, expected a multiple of "
                                        r"train\.grad_accum = 3"):
    validate.divisible(c, "train.batch_size", "train.grad_accum")
  c.train.grad_accum = 0
  with pytest.raises(ConfigError, match=r"^train\.grad_accum: got 0"):
    validate.divisible(c, "train.batch_size", "train.grad_accum")


def test_missing_key_is_named():
  with pytest.raises(ConfigError, match=r"runs\.nope: got None, expected an existing config key"):
    validate.positive(cfg(), "runs.nope")


# ----- experiments validate their whole config before any work (jaxvlm run calls validate) ----
SFT = "configs/sft.py:tiny"


@pytest.mark.parametrize("override,key", [
    ("data.source=foo", "data.source"),
    ("data.num_test=0", "data.num_test"),
    ("train.steps=0", "train.steps"),
    ("train.grad_accum=3", "train.batch_size"),
    ("train.grad_accum=0", "train.grad_accum"),
    ("lora.enabled=True --config.lora.dropout=1.0", "lora.dropout"),
    ("data.digits=1 --config.data.num_train=90", "data.num_train"),
    ("data.source=gsm8k", "data.train_path"),
])
def test_sft_bad_settings_end_in_one_line_before_the_run_folder_exists(tmp_path, capsys,
                                                                      override, key):
  workdir = tmp_path / "run"
  argv = ["run", "--config", SFT, "--workdir", str(workdir)]
  argv += [f"--config.{o}" for o in override.split(" --config.")]
  start = time.perf_counter()
  assert cli.main(argv) == 2
  assert time.perf_counter() - start < 10
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith(f"jaxvlm: error: {key}"), err
  assert not workdir.exists()


def test_sft_gsm8k_with_the_tiny_model_or_an_offline_hub_id_is_refused(tmp_path, monkeypatch):
  data = os.path.join(os.path.dirname(__file__), "fixtures", "gsm8k", "test.jsonl")
  paths = [f"--config.data.train_path={data}", f"--config.data.test_path={data}"]
  cfg = load_config(SFT, ["--config.data.source=gsm8k", *paths])
  with pytest.raises(ConfigError, match=r"^model\.path: got '', expected a HF model folder"):
    experiment_module("sft").validate(cfg)
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  cfg = load_config(SFT, ["--config.data.source=gsm8k", *paths,
                          "--config.model.path=no-such-org/no-such-model"])
  with pytest.raises(ConfigError, match=r"^model\.path: got 'no-such-org/no-such-model'"):
    experiment_module("sft").validate(cfg)


@pytest.mark.parametrize("override,key", [
    ("keep.modes=('relative', 'foo')", "keep.modes: got 'foo'"),
    ("keep.selects=(0.5, 1.5)", "keep.selects: got 1.5"),
    ("keep.min_keep=0.0", "keep.min_keep: got 0.0"),
    ("keep.percentiles=(95.0, 5.0)", "keep.percentiles"),
    ("models.dream.kv_heads=0", "models.dream.kv_heads: got 0"),
    ("models.dream.importance_path=/no/such/importance.npy", "models.dream.importance_path"),
    ("quality.steps=15", "quality.steps: got 15"),
    ("quality.num_heads=3", "quality.hidden_size: got 64, expected a multiple of quality.num_heads"),
    ("quality.skip=1.0", "quality.skip: got 1.0"),
    ("quality.cache_modes=('full',)", "quality.cache_modes: got 'full'"),
])
def test_adaptive_keep_ratio_bad_settings_are_refused_before_work(tmp_path, capsys, override,
                                                                  key):
  workdir = tmp_path / "run"
  start = time.perf_counter()
  code = cli.main(["run", "--config", "configs/adaptive_keep_ratio.py:tiny", "--workdir",
                   str(workdir), f"--config.{override}"])
  assert code == 2 and time.perf_counter() - start < 10
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith(f"jaxvlm: error: {key}"), err
  assert not workdir.exists()


def test_runnable_presets_pass():
  for spec in ("adaptive_keep_ratio.py:tiny", "adaptive_keep_ratio.py:default", "sft.py:tiny",
               "sft.py:vlm_tiny"):
    cfg = load_config(f"configs/{spec}")
    experiment_module(cfg.experiment).validate(cfg)
