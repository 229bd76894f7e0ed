"""``jaxvlm run``: loads a config, runs its experiment, writes outputs under a run folder.

The config's ``experiment`` field names a script ``experiments/<experiment>.py`` whose
``main(config, workdir) -> dict`` does the work and writes ``metrics.json`` and ``report.md``
into ``workdir``. Overrides come as ``--config.a.b=value``. A script may define
``validate(config) -> None``, which checks the whole config (see :mod:`jaxvlm.validate`) and runs
before the run folder is created, so a bad value ends the run before any work. ``config.json``
in the run folder holds the settings of its results: a run under other settings names the changed
keys and replaces it only once it completes.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import sys

from jaxvlm import config as config_lib
from jaxvlm import runcache
from jaxvlm.errors import ConfigError
from jaxvlm.io import write_json

ACCEPTS_EXTRA_ARGS = True
DEFAULT_CONFIG = "configs/sft.py:tiny"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--config", default=DEFAULT_CONFIG,
                      help=f"config file and preset, path[:preset] (default {DEFAULT_CONFIG})")
  parser.add_argument("--workdir", default=None,
                      help="run folder (default runs/<experiment>-<timestamp>)")
  parser.formatter_class = argparse.RawDescriptionHelpFormatter
  lines = [f"  configs/{name}.py:{{{','.join(presets)}}}\n      {about}"
           for name, presets, about in list_experiments()]
  parser.epilog = ("Override any config key with --config.KEY=VALUE (e.g. --config.train.steps=10)."
                   "\n\nexperiments (config:{presets}, first preset is the default):\n"
                   + "\n".join(lines))


def list_experiments() -> list[tuple[str, list[str], str]]:
  """(name, presets, first docstring line) of every ``configs/*.py``, read without importing."""
  out = []
  for path in sorted((config_lib.REPO_ROOT / "configs").glob("*.py")):
    if path.stem.startswith("_"):
      continue
    try:
      tree = ast.parse(path.read_text())
    except SyntaxError as e:
      out.append((path.stem, [], f"(cannot be parsed: {e.msg}, line {e.lineno})"))
      continue
    about = (ast.get_docstring(tree) or "(no docstring)").strip().splitlines()[0]
    out.append((path.stem, _presets(tree), about))
  return out


def _presets(tree: ast.Module) -> list[str]:
  """Preset names of ``get_config``: its ``arg or "x"`` default first, then every string the
  argument (or a name derived from it) is compared with, directly or through a dict's keys."""
  fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "get_config"),
            None)
  if fn is None or not fn.args.args:
    return []
  arg_names, dicts, found = {fn.args.args[0].arg}, {}, []
  strings = lambda node: [c.value for c in ast.walk(node)
                          if isinstance(c, ast.Constant) and isinstance(c.value, str)]
  for node in ast.walk(fn):
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(
        node.targets[0], ast.Name):
      target, value = node.targets[0].id, node.value
      if any(isinstance(n, ast.Name) and n.id in arg_names for n in ast.walk(value)):
        arg_names.add(target)
        if isinstance(value, ast.BoolOp):
          found += strings(value)
      if isinstance(value, ast.Dict):
        dicts[target] = [k.value for k in value.keys if isinstance(k, ast.Constant)]
  for node in ast.walk(fn):
    if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and (
        node.left.id in arg_names):
      for comp in node.comparators:
        found += dicts.get(comp.id, []) if isinstance(comp, ast.Name) else strings(comp)
  return list(dict.fromkeys(found))


def experiment_module(name: str):
  """Imports ``experiments/<name>.py`` from the repository and returns the module."""
  path = config_lib.REPO_ROOT / "experiments" / f"{name}.py"
  if not path.exists():
    known = sorted(p.stem for p in path.parent.glob("*.py") if not p.stem.startswith("_"))
    raise ConfigError("experiment", name, f"one of {known}")
  spec = importlib.util.spec_from_file_location(f"jaxvlm_experiment_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def run_config(spec: str, overrides=(), workdir: str | None = None) -> tuple[str, dict]:
  """Runs the experiment of config ``spec``; returns (workdir, summary)."""
  cfg = config_lib.load_config(spec, overrides)
  if "experiment" not in cfg:
    raise ConfigError("experiment", None, "a config field naming a script in experiments/")
  module = experiment_module(cfg.experiment)
  if hasattr(module, "validate"):
    module.validate(cfg)
  workdir = workdir or config_lib.default_workdir(cfg.experiment)
  config_path, changed = os.path.join(workdir, "config.json"), []
  if os.path.exists(config_path):
    with open(config_path, encoding="utf-8") as f:
      changed = runcache.changed_keys(json.load(f), cfg.to_dict())
  if changed:  # config.json keeps describing the folder's results until this run completes
    print(f"[jaxvlm] settings changed since the last run in this folder: {', '.join(changed)}",
          flush=True)
  else:
    os.makedirs(workdir, exist_ok=True)
    write_json(config_path, cfg.to_dict())
  print(f"[jaxvlm] run folder: {os.path.abspath(workdir)}", flush=True)
  summary = module.main(cfg, workdir)
  if changed:
    write_json(config_path, cfg.to_dict())
  return workdir, summary


def main(args: argparse.Namespace) -> int:
  bad = [a for a in args.extra if not a.startswith("--config.")]
  if bad:
    raise ConfigError("arguments", bad, "--config.KEY=VALUE overrides only")
  workdir, summary = run_config(args.config, args.extra, args.workdir)
  print(json.dumps(summary, indent=2, default=str))
  print(f"[jaxvlm] outputs written to {os.path.abspath(workdir)}", flush=True)
  return 0


def experiment_entrypoint(main_fn, default_config: str) -> None:
  """``python experiments/X.py [--config path:preset] [--workdir D] [--config.k=v ...]``."""
  parser = argparse.ArgumentParser()
  add_arguments(parser)
  parser.set_defaults(config=default_config)
  argv = sys.argv[1:]
  args, extra = parser.parse_known_args([a for a in argv if a != "--debug"])
  args.extra = extra
  from jaxvlm.cli import guarded
  sys.exit(guarded(lambda: main(args), debug="--debug" in argv))
