"""Errors raised on bad user input.

Every error is a ``ValueError`` subclass whose message names the offending field (or file, or
tensor), the value that was found and what was expected, so that a user can fix the input
without reading the code.
"""

from __future__ import annotations

from typing import Any

# The kernels package has its own error types; jaxvlm shares them (one hierarchy, one root), so
# ``except ConfigError`` / ``except JaxVLMError`` catch errors from either package.
from pallas_kernels.errors import ConfigError, InputError, ShapeError

JaxVLMError = InputError  # base class of every input error raised by jaxvlm or pallas_kernels


class CheckpointError(JaxVLMError):
  """A checkpoint folder or file is missing, incomplete or does not match the model."""


class MissingFileError(CheckpointError):
  """A required file (config.json, safetensors shard, index) is absent."""

  def __init__(self, path: str, what: str):
    super().__init__(f"{what}: file {path!r} does not exist")
    self.path = path


class UnknownModelTypeError(ConfigError):
  """config.json names a ``model_type`` no registered family handles."""

  def __init__(self, model_type: Any, known: list[str]):
    super().__init__("model_type", model_type, f"one of {sorted(known)}")


class TensorShapeError(CheckpointError):
  """A checkpoint tensor's shape differs from the one the config implies."""

  def __init__(self, name: str, got: tuple, expected: tuple, source: str = ""):
    where = f" in {source}" if source else ""
    super().__init__(f"tensor {name!r}{where}: shape {tuple(got)} does not match the config's "
                     f"expected shape {tuple(expected)}")
    self.name, self.got, self.expected = name, tuple(got), tuple(expected)


class UnusedTensorError(CheckpointError):
  """Checkpoint tensors no parameter consumed (or parameters no tensor filled)."""

  def __init__(self, unused: list[str], missing: list[str], source: str = ""):
    parts = []
    if unused:
      parts.append(f"{len(unused)} tensor(s) not consumed by the model: {sorted(unused)[:10]}")
    if missing:
      parts.append(f"{len(missing)} parameter(s) not found in the checkpoint: {sorted(missing)[:10]}")
    where = f"{source}: " if source else ""
    super().__init__(where + "; ".join(parts))
    self.unused, self.missing = sorted(unused), sorted(missing)


class DataFileError(JaxVLMError):
  """A data file (VQA questions / annotations json, ...) is malformed or inconsistent."""

  def __init__(self, path: str, problem: str):
    super().__init__(f"{path}: {problem}")
    self.path, self.problem = path, problem


class SettingsChangedError(ConfigError):
  """Results computed under other settings would be reused (a resumed run, a cached part)."""

  def __init__(self, what: str, changes: dict[str, tuple[Any, Any]], remedy: str):
    shown = "; ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in list(changes.items())[:8])
    more = f" (+{len(changes) - 8} more)" if len(changes) > 8 else ""
    InputError.__init__(self, f"{what} was computed under other settings: {shown}{more}; "
                              f"{remedy}")
    self.field, self.value, self.expected = ", ".join(changes), changes, remedy
    self.what, self.changes = what, changes
