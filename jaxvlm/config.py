"""Loading ml-collections experiment configs and applying ``--config.a.b=value`` overrides.

A config file is a Python file with ``get_config(arg: str | None) -> ConfigDict``; ``arg`` selects
a preset (``configs/sft.py:tiny``). Overrides may only set keys that exist, with a value of the
field's type; anything else raises :class:`jaxvlm.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import pathlib
import time

import ml_collections

from jaxvlm.errors import ConfigError

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def resolve_path(path: str) -> pathlib.Path:
  """Finds a config or experiment file given as-is, or relative to the repository root."""
  p = pathlib.Path(path)
  if p.exists():
    return p.resolve()
  if (REPO_ROOT / p).exists():
    return (REPO_ROOT / p).resolve()
  raise ConfigError("config", path, "an existing config file (e.g. configs/sft.py:tiny)")


def load_config(spec: str, overrides: list[str] | tuple[str, ...] = ()) -> ml_collections.ConfigDict:
  """Loads ``path[:arg]``, calls its ``get_config(arg)``, locks it and applies the overrides."""
  path, _, arg = spec.partition(":")
  file = resolve_path(path)
  module_spec = importlib.util.spec_from_file_location(f"_jaxvlm_config_{file.stem}", file)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError("config", str(file), "a file defining get_config(arg)")
  try:
    config = module.get_config(arg or None)
  except KeyError as e:
    raise ConfigError("config preset", arg, f"a preset defined in {file.name} ({e})") from None
  config.lock()
  for item in overrides:
    apply_override(config, item)
  return config


def apply_override(config: ml_collections.ConfigDict, item: str) -> None:
  """Applies one ``a.b.c=value`` (the ``--config.`` prefix optional) to a locked config."""
  item = item.removeprefix("--").removeprefix("config.")
  if "=" not in item:
    raise ConfigError(item, None, "an override of the form --config.key=value")
  key, raw = item.split("=", 1)
  *parents, leaf = key.split(".")
  node = config
  for i, name in enumerate(parents):
    if name not in node or not isinstance(node[name], ml_collections.ConfigDict):
      raise ConfigError(".".join(parents[: i + 1]), raw, "an existing config section")
    node = node[name]
  if leaf not in node:
    raise ConfigError(key, raw, f"one of the existing keys {sorted(node.keys())}")
  current = node[leaf]
  value = _parse_like(raw, current, key)
  node[leaf] = value


def _parse_like(raw: str, current, key: str):
  """Parses ``raw`` as a Python literal and checks it against the type of the current value."""
  try:
    value = ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    value = raw
  if current is None:
    return value
  if isinstance(current, bool):
    if isinstance(value, bool):
      return value
    if raw.lower() in ("true", "false"):
      return raw.lower() == "true"
    raise ConfigError(key, raw, "a bool (True/False)")
  if isinstance(current, int):
    if isinstance(value, int) and not isinstance(value, bool):
      return value
    raise ConfigError(key, raw, "an int")
  if isinstance(current, float):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      return float(value)
    raise ConfigError(key, raw, "a float")
  if isinstance(current, str):
    return raw if not isinstance(value, str) else value
  if isinstance(current, (tuple, list)):
    if isinstance(value, (tuple, list)):
      return type(current)(value)
    raise ConfigError(key, raw, f"a {type(current).__name__} literal such as (1, 2)")
  if isinstance(current, ml_collections.ConfigDict):
    raise ConfigError(key, raw, "a leaf key (this is a section)")
  if not isinstance(value, type(current)):
    raise ConfigError(key, raw, f"a {type(current).__name__}")
  return value


def default_workdir(name: str) -> str:
  """``runs/<name>-<YYYYmmdd-HHMMSS>``."""
  return os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
