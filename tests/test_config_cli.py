"""ml-collections config loading, --config.* overrides and the jaxvlm command."""

import subprocess
import sys
import textwrap

import pytest

from jaxvlm import cli, errors
from jaxvlm.config import load_config

CONFIG = textwrap.dedent("""
    import ml_collections

    def get_config(arg=None):
      presets = {"tiny": 2, "big": 100}
      c = ml_collections.ConfigDict()
      c.experiment = "x"
      c.train = ml_collections.ConfigDict(dict(steps=presets[arg or "tiny"], lr=1e-3,
                                               lora=True, name="a", shape=(1, 2)))
      return c
""")


@pytest.fixture
def config_file(tmp_path):
  path = tmp_path / "cfg.py"
  path.write_text(CONFIG)
  return str(path)


def test_presets_and_typed_overrides(config_file):
  c = load_config(f"{config_file}:big", ["--config.train.steps=7", "--config.train.lr=2",
                                          "--config.train.lora=False", "--config.train.name=b",
                                          "--config.train.shape=(3,4)"])
  assert (c.train.steps, c.train.lr, c.train.lora, c.train.name, c.train.shape) == (
      7, 2.0, False, "b", (3, 4))
  assert load_config(config_file).train.steps == 2


@pytest.mark.parametrize("override,field", [
    ("--config.train.stepz=3", "train.stepz"),
    ("--config.trian.steps=3", "trian"),
    ("--config.train.steps=abc", "train.steps"),
    ("--config.train.steps=1.5", "train.steps"),
    ("--config.train.lora=maybe", "train.lora"),
])
def test_bad_overrides_name_the_key(config_file, override, field):
  with pytest.raises(errors.ConfigError, match=field.replace(".", r"\.")):
    load_config(config_file, [override])


def test_unknown_preset_and_missing_file(config_file):
  with pytest.raises(errors.ConfigError, match="preset"):
    load_config(f"{config_file}:huge")
  with pytest.raises(errors.ConfigError, match="config"):
    load_config("no/such/file.py")


def test_help_lists_subcommands():
  out = subprocess.run([sys.executable, "-m", "jaxvlm.cli", "--help"], capture_output=True,
                       text=True, check=True).stdout
  for name in cli.COMMANDS:
    assert name in out


def test_run_refuses_unknown_experiment(config_file, capsys):
  assert cli.main(["run", "--config", config_file]) == 2
  assert "jaxvlm: error: experiment" in capsys.readouterr().err
