"""Errors raised on bad input to the kernels (``ValueError`` subclasses).

``pallas_kernels`` stands alone: these classes are its own, and ``jaxvlm.errors`` re-exports them
(``jaxvlm.errors.ConfigError is pallas_kernels.errors.ConfigError``), so one ``except`` catches a
bad argument whether jaxvlm or a kernel found it. Messages name the field, the value and what was
expected.
"""

from __future__ import annotations

from typing import Any


class InputError(ValueError):
  """Base class of every input error raised by pallas_kernels (and by jaxvlm)."""


def _fmt(field: str, value: Any, expected: str) -> str:
  return f"{field}: got {value!r}, expected {expected}"


class ConfigError(InputError):
  """An option has a bad value."""

  def __init__(self, field: str, value: Any, expected: str):
    super().__init__(_fmt(field, value, expected))
    self.field, self.value, self.expected = field, value, expected


class ShapeError(InputError):
  """An input array has a shape or count inconsistent with another input."""

  def __init__(self, field: str, value: Any, expected: str):
    super().__init__(_fmt(field, value, expected))
    self.field, self.value, self.expected = field, value, expected
