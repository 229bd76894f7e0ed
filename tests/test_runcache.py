"""The run cache: keys change with every setting and input file; torn jsonl lines are recovered."""

import json
import os
import shutil
import time

import ml_collections
import numpy as np
import pytest

from folder_hash import tree_digest
from jaxvlm import cli, models, runcache
from jaxvlm.config import load_config
from jaxvlm.errors import ConfigError, DataFileError, MissingFileError, SettingsChangedError
from jaxvlm.models import tiny
from jaxvlm.run import experiment_module

# compile-bound (tiny shapes, few steps): XLA's cheap compile mode (conftest)
pytestmark = pytest.mark.usefixtures("fast_compile")


def settings(**overrides):
  c = ml_collections.ConfigDict({"train": {"steps": 10, "lr": 1e-3}, "lora": {"rank": 8},
                                 "rows": ("nocot", "kava")})
  for k, v in overrides.items():
    section, leaf = k.split("__")
    c[section][leaf] = v
  return c


def test_fingerprint_is_canonical_and_changes_with_every_setting():
  base = runcache.fingerprint(settings())
  assert len(base) == 16 and int(base, 16) >= 0
  as_dict = {"rows": ["nocot", "kava"], "lora": {"rank": 8}, "train": {"lr": 1e-3, "steps": 10}}
  assert runcache.fingerprint(as_dict) == base
  assert runcache.fingerprint(settings().lock()) == base
  assert runcache.fingerprint({**as_dict, "lora": {"rank": np.int64(8)}}) == base
  changed = [settings(train__steps=11), settings(train__lr=2e-3), settings(lora__rank=16)]
  assert len({base, *(runcache.fingerprint(c) for c in changed)}) == 4


def test_fingerprint_follows_input_files_and_folders(tmp_path):
  data = tmp_path / "data.jsonl"
  data.write_text("a\n")
  folder = tmp_path / "model"
  (folder / "sub").mkdir(parents=True)
  (folder / "sub" / "w.bin").write_bytes(b"12")
  first = runcache.fingerprint({"x": 1}, [str(data), str(folder)])
  assert first == runcache.fingerprint({"x": 1}, [str(data), str(folder)])
  data.write_text("ab\n")
  second = runcache.fingerprint({"x": 1}, [str(data), str(folder)])
  (folder / "sub" / "w.bin").write_bytes(b"123")
  third = runcache.fingerprint({"x": 1}, [str(data), str(folder)])
  assert len({first, second, third}) == 3
  with pytest.raises(MissingFileError, match="absent.json"):
    runcache.fingerprint({}, [str(tmp_path / "absent.json")])


def test_unserialisable_setting_names_its_key():
  with pytest.raises(ConfigError, match=r"settings\.train\.fn"):
    runcache.fingerprint({"train": {"fn": object()}})


def test_describe_lists_dotted_keys_sorted():
  text = runcache.describe(settings())
  assert text.splitlines() == ["- lora.rank = 8", "- rows = [\"nocot\", \"kava\"]",
                               "- train.lr = 0.001", "- train.steps = 10"]


def test_changed_keys():
  assert runcache.changed_keys(settings(), settings(train__steps=3, lora__rank=4)) == [
      "lora.rank", "train.steps"]
  assert runcache.changed_keys({"a": 1}, {"a": 1, "b": 2}) == ["b"]


def test_cache_never_returns_a_value_stored_under_other_settings(tmp_path):
  cache = runcache.RunCache(str(tmp_path / "cache"))
  assert cache.load("row-nocot", settings()) is None
  cache.save("row-nocot", settings(), {"accuracy": 0.5})
  assert cache.load("row-nocot", settings()) == {"accuracy": 0.5}
  assert cache.load("row-nocot", settings(train__steps=20)) is None
  assert cache.load("row-kava", settings()) is None
  cache.save("row-nocot", settings(train__steps=20), {"accuracy": 0.7})
  assert cache.load("row-nocot", settings()) == {"accuracy": 0.5}
  assert cache.load("row-nocot", settings(train__steps=20)) == {"accuracy": 0.7}
  steps = sorted(s["train"]["steps"] for s in cache.stored("row-nocot"))
  assert steps == [10, 20]


def test_entry_folder_records_its_settings(tmp_path):
  cache = runcache.RunCache(str(tmp_path / "cache"))
  folder = cache.entry("base", settings())
  assert os.path.basename(folder) == "base-" + runcache.fingerprint(settings())
  stored = json.loads(open(os.path.join(folder, "settings.json")).read())
  assert stored["settings"]["lora"]["rank"] == 8 and stored["files"] == []
  assert cache.entry("base", settings()) == folder
  with pytest.raises(ConfigError, match="cache part name"):
    cache.entry("../escape", settings())


def test_corrupt_cached_value_names_the_file(tmp_path):
  cache = runcache.RunCache(str(tmp_path))
  cache.save("p", {"a": 1}, [1, 2])
  path = os.path.join(cache.path("p", {"a": 1}), "value.json")
  open(path, "w").write("{\"val")
  with pytest.raises(DataFileError, match="value.json"):
    cache.load("p", {"a": 1})


def test_torn_last_line_is_dropped_and_the_file_repaired(tmp_path):
  path = str(tmp_path / "beams.jsonl")
  for i in range(3):
    runcache.append_jsonl(path, {"qid": i, "beam": [i, i + 1]})
  good = open(path, "rb").read()
  with open(path, "ab") as f:
    f.write(b'{"qid": 3, "be')  # a kill during the append
  assert [r["qid"] for r in runcache.read_jsonl(path)] == [0, 1, 2]
  assert open(path, "rb").read() == good
  with open(path, "ab") as f:
    f.write(b'{"qid": 3, "be')
  runcache.append_jsonl(path, {"qid": 3, "beam": [3, 4]})
  assert [r["qid"] for r in runcache.read_jsonl(path)] == [0, 1, 2, 3]


def test_last_line_without_newline_counts_as_torn(tmp_path):
  path = tmp_path / "c.jsonl"
  path.write_bytes(b'{"a": 1}\n{"a": 2}')
  assert runcache.read_jsonl(str(path)) == [{"a": 1}]
  assert path.read_bytes() == b'{"a": 1}\n'
  path.write_bytes(b'{"a"')
  assert runcache.read_jsonl(str(path)) == [] and path.read_bytes() == b""
  assert runcache.read_jsonl(str(tmp_path / "absent.jsonl")) == []


def test_bad_line_before_the_last_names_file_and_line(tmp_path):
  path = tmp_path / "c.jsonl"
  path.write_bytes(b'{"a": 1}\nnot json\n{"a": 3}\n')
  with pytest.raises(DataFileError, match=r"c\.jsonl: line 2: not JSON"):
    runcache.read_jsonl(str(path))
  path.write_bytes(b'{"a": 1}\n[1, 2]\n')
  with pytest.raises(DataFileError, match=r"line 2: got list, expected a JSON object"):
    runcache.read_jsonl(str(path))


def test_refuse_changed_names_every_changed_key_but_the_ignored_ones():
  runcache.refuse_changed("x", settings(), settings())
  runcache.refuse_changed("x", settings(), settings(train__steps=5), ignore=("train",))
  with pytest.raises(SettingsChangedError) as e:
    runcache.refuse_changed("the checkpoint at step 4", settings(),
                            settings(train__steps=5, lora__rank=2), ignore=("train.lr",))
  assert e.value.field == "lora.rank, train.steps" and isinstance(e.value, ConfigError)
  assert str(e.value).startswith("the checkpoint at step 4 was computed under other settings: "
                                 "lora.rank: 8 then, 2 now; train.steps: 10 then, 5 now; ")


# ----- the SFT job: a re-run never shows a result of other settings ---------------------------
SHRUNK = ["--config.train.steps=4", "--config.data.num_train=64", "--config.data.num_test=8",
          "--config.train.batch_size=8", "--config.train.eval_batch_size=8",
          "--config.train.log_every=2", "--config.train.checkpoint_every=0",
          "--config.data.max_new_tokens=6"]


def run_sft(capsys, workdir, *overrides):
  code = cli.main(["run", "--config", "configs/sft.py:tiny", "--workdir", str(workdir),
                   *SHRUNK, *overrides])
  captured = capsys.readouterr()
  return code, captured.err, captured.out


def test_sft_rerun_with_changed_settings_stops_naming_the_keys(tmp_path, capsys):
  workdir = tmp_path / "run"
  assert run_sft(capsys, workdir)[0] == 0
  metrics = json.loads((workdir / "metrics.json").read_text())
  assert metrics["num_test"] == 8
  assert "- data.num_test = 8" in (workdir / "report.md").read_text()
  before = tree_digest(workdir)
  start = time.perf_counter()
  code, err, out = run_sft(capsys, workdir, "--config.data.num_test=6",
                           "--config.optimizer.lr=0.01")
  assert code == 2 and time.perf_counter() - start < 30
  assert "settings changed since the last run in this folder: data.num_test, optimizer.lr" in out
  line = err.strip().splitlines()[-1]
  assert line.startswith("jaxvlm: error: checkpoint ") and "computed under other settings: " \
      "data.num_test: 8 then, 6 now; optimizer.lr: 0.003 then, 0.01 now;" in line
  assert tree_digest(workdir) == before  # no step taken, nothing written, config.json kept
  # Keys that change no result (logging, checkpointing) may change; the cached accuracy before
  # training is reused, not recomputed.
  cache = runcache.RunCache(str(workdir / "cache"))
  assert len(cache.stored("accuracy_before")) == 1
  assert run_sft(capsys, workdir, "--config.train.log_every=1")[0] == 0
  assert len(cache.stored("accuracy_before")) == 1
  assert json.loads((workdir / "metrics.json").read_text())["accuracy_before"] == (
      metrics["accuracy_before"])


def test_sft_cached_accuracy_is_keyed_by_its_settings(tmp_path):
  sft = experiment_module("sft")
  cache = runcache.RunCache(str(tmp_path))
  calls = []

  def compute(value):
    return lambda: calls.append(value) or {"accuracy": value}

  c = load_config("configs/sft.py:tiny", ["--config.data.num_test=8"])
  assert sft.cached_accuracy(cache, c, compute(0.25)) == {"accuracy": 0.25}
  assert sft.cached_accuracy(cache, c, compute(0.5)) == {"accuracy": 0.25}
  for override in ("data.num_test=6", "seed=1", "lora.enabled=True", "data.max_new_tokens=5",
                   "model.hf_config.hidden_size=32"):
    changed = load_config("configs/sft.py:tiny",
                          ["--config.data.num_test=8", f"--config.{override}"])
    assert sft.cached_accuracy(cache, changed, compute(override)) == {"accuracy": override}
  assert len(calls) == 6


def test_sft_leaves_its_input_model_and_data_unchanged(tmp_path, capsys):
  inputs, workdir = tmp_path / "inputs", tmp_path / "run"
  data = inputs / "gsm8k.jsonl"
  inputs.mkdir()
  shutil.copy(os.path.join(os.path.dirname(__file__), "fixtures", "gsm8k", "test.jsonl"), data)
  texts = [r["question"] + r["answer"] for r in map(json.loads, data.read_text().splitlines())]
  tok = tiny.train_tokenizer("llava", texts, vocab_size=300)
  tok.save_pretrained(inputs / "model")
  models.save_pretrained(models.from_config(dict(
      model_type="llama", vocab_size=len(tok), hidden_size=32, intermediate_size=48,
      num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
      max_position_embeddings=256)), str(inputs / "model"))
  before = tree_digest(inputs)
  overrides = {"model.path": inputs / "model", "data.train_path": data, "data.test_path": data,
               "model.dtype": "float32", "model.remat": False, "data.test_limit": 2,
               "data.seq_len": 256, "data.max_new_tokens": 4, "train.steps": 2,
               "train.batch_size": 2, "train.grad_accum": 1, "train.eval_batch_size": 2,
               "train.eval_every": 0, "train.checkpoint_every": 0, "lora.rank": 4,
               "optimizer.warmup_steps": 0}
  assert cli.main(["run", "--config", "configs/sft.py:hf", "--workdir", str(workdir),
                   *(f"--config.{k}={v}" for k, v in overrides.items())]) == 0, (
      capsys.readouterr().err)
  assert tree_digest(inputs) == before
  assert np.isfinite(json.loads((workdir / "metrics.json").read_text())["loss_last"])
  assert (workdir / "adapter").is_dir() and (workdir / "export" / "config.json").is_file()
