"""The ``jaxvlm`` command on bad input: one stderr line, exit status 2; checkpoint errors name the file."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

from jaxvlm import cli, errors
from jaxvlm.models import load_pretrained

REPO = pathlib.Path(__file__).resolve().parent.parent
TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2)


def run_cli(capsys, *argv):
  code = cli.main(list(argv))
  captured = capsys.readouterr()
  return code, captured.err


def one_error_line(err: str) -> str:
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("jaxvlm: error: "), err
  return lines[0]


@pytest.fixture
def hf_folder(tmp_path):
  torch.manual_seed(0)
  transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY)).save_pretrained(tmp_path)
  return tmp_path


@pytest.mark.parametrize("argv,expected", [
    (["run", "--config", "configs/sft.py:tiny", "--config.train.stepz=3"],
     "train.stepz: got '3', expected one of the existing keys"),
    (["run", "--config", "configs/sft.py:tiny", "--config.train.steps=abc"],
     "train.steps: got 'abc', expected an int"),
    (["run", "--config", "configs/nope.py:tiny"], "config: got 'configs/nope.py'"),
    (["run", "--config", "configs/sft.py:huge"], "config preset: got 'huge'"),
    (["run", "--config", "configs/sft.py", "--bogus"], "arguments: got ['--bogus']"),
    (["parity", "/no/such/checkpoint"], "model.path (a local model folder): file "
                                         "'/no/such/checkpoint' does not exist"),
    (["parity", "no-such-org/no-such-model"], "model.path: got 'no-such-org/no-such-model', "
                                              "expected an existing local model folder"),
    (["compare-checkpoints", "/no/a", "/no/b"], "/no/a"),
    (["compare-indices", "/no/a.json", "/no/b.json"], "/no/a.json"),
])
def test_input_errors_are_one_line_and_status_2(capsys, argv, expected):
  code, err = run_cli(capsys, *argv)
  assert code == 2
  assert expected in one_error_line(err)


def test_real_process_exit_status_and_debug_traceback(tmp_path):
  argv = [sys.executable, "-m", "jaxvlm.cli", "run", "--config", "configs/sft.py:tiny",
          "--config.train.stepz=3"]
  env = {k: v for k, v in os.environ.items() if k != cli.DEBUG_ENV}
  plain = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env)
  assert plain.returncode == 2 and plain.stdout == ""
  assert one_error_line(plain.stderr).startswith("jaxvlm: error: train.stepz:")
  env[cli.DEBUG_ENV] = "1"
  by_env = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env)
  assert by_env.returncode == 1 and "Traceback" in by_env.stderr and "ConfigError" in by_env.stderr
  with pytest.raises(errors.ConfigError, match="train.stepz"):  # --debug anywhere: the raw error
    cli.main(argv[3:] + ["--debug"])


def test_run_help_lists_every_config_with_presets_and_description(capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(["run", "--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  configs = sorted(p.stem for p in (REPO / "configs").glob("*.py") if not p.stem.startswith("_"))
  assert configs and all(f"configs/{name}.py:{{" in out for name in configs)
  assert re.search(r"configs/sft\.py:\{tiny,[\w,]*hf[\w,]*\}", out)  # default preset first
  assert "Supervised fine-tuning of a causal LM" in out
  assert "--config.KEY=VALUE" in out


# ----------------------------------------------------------------------------- checkpoint files


def test_truncated_safetensors_named(hf_folder, capsys):
  file = hf_folder / "model.safetensors"
  data = file.read_bytes()
  file.write_bytes(data[: len(data) - 100])
  with pytest.raises(errors.CheckpointError, match=r"model\.safetensors: truncated \(tensor"):
    load_pretrained(str(hf_folder))
  file.write_bytes(data[:5])
  with pytest.raises(errors.CheckpointError, match=r"model\.safetensors: truncated or not a"):
    load_pretrained(str(hf_folder))
  code, err = run_cli(capsys, "parity", str(hf_folder))
  assert code == 2 and str(file) in one_error_line(err)


def test_corrupt_header_named(hf_folder):
  file = hf_folder / "model.safetensors"
  data = bytearray(file.read_bytes())
  data[8:12] = b"\xff\xfe{{"
  file.write_bytes(bytes(data))
  with pytest.raises(errors.CheckpointError, match=r"model\.safetensors: corrupt safetensors header"):
    load_pretrained(str(hf_folder))


def test_wrong_dtype_named(hf_folder):
  from safetensors.numpy import load_file, save_file
  tensors = load_file(hf_folder / "model.safetensors")
  tensors["model.norm.weight"] = tensors["model.norm.weight"].astype(np.int32)
  save_file(tensors, hf_folder / "model.safetensors")
  with pytest.raises(errors.CheckpointError,
                     match=r"model\.safetensors: tensor 'model\.norm\.weight' has dtype int32, "
                           "expected a floating-point dtype"):
    load_pretrained(str(hf_folder))
  header = json.dumps({"x": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}).encode()
  (hf_folder / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(4))
  with pytest.raises(errors.CheckpointError, match=r"tensor 'x' has dtype 'F99'"):
    load_pretrained(str(hf_folder))


def test_pickle_only_bin_refused_with_a_hint(hf_folder):
  os.remove(hf_folder / "model.safetensors")
  (hf_folder / "pytorch_model.bin").write_bytes(b"not read")
  with pytest.raises(errors.CheckpointError, match=r"pytorch_model\.bin: pickle-only.*save_pretrained"):
    load_pretrained(str(hf_folder))


def test_bfloat16_checkpoint_loads(tmp_path):
  torch.manual_seed(1)
  hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY)).to(torch.bfloat16)
  hf.save_pretrained(tmp_path)
  model = load_pretrained(str(tmp_path))
  want = hf.model.embed_tokens.weight.float().detach().numpy()
  np.testing.assert_array_equal(np.asarray(model.model.embed_tokens.embedding[...]), want)
