"""Checks of experiment config values, run before any work.

Each check reads a dotted key of an ``ml_collections.ConfigDict`` and raises
:class:`jaxvlm.errors.ConfigError` naming the full key, the value found and what was expected.
An experiment module collects its checks in ``validate(config)``, which ``jaxvlm run`` calls
before it creates the run folder.
"""

from __future__ import annotations

import numbers
from typing import Any, Iterable

from jaxvlm.errors import ConfigError


def get(cfg, key: str) -> Any:
  """The value at dotted ``key`` (a missing key is an error naming it)."""
  node = cfg
  for i, part in enumerate(key.split(".")):
    if not hasattr(node, "keys") or part not in node:
      raise ConfigError(key, None, f"an existing config key ({'.'.join(key.split('.')[:i + 1])} "
                                   "is absent)")
    node = node[part]
  return node


def items(value: Any) -> list:
  """A list/tuple's items, a comma string's stripped parts, or the value alone."""
  if isinstance(value, (list, tuple)):
    return list(value)
  if isinstance(value, str) and "," in value:
    return [part.strip() for part in value.split(",")]
  return [value]


def choice(cfg, key: str, choices: Iterable) -> None:
  """The value at ``key`` (or each item of a list/tuple/comma string) is one of ``choices``."""
  choices = list(choices)
  value = get(cfg, key)
  several = items(value)
  for item in several:
    if item not in choices:
      where = f" (each item of {value!r})" if len(several) > 1 or value != item else ""
      raise ConfigError(key, item, f"one of {choices}{where}")


def _bounds(low, high, low_open: bool, high_open: bool) -> str:
  if low is not None and high is not None:
    return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
  if low is not None:
    return f"{'>' if low_open else '>='} {low}"
  if high is not None:
    return f"{'<' if high_open else '<='} {high}"
  return "any number"


def in_range(cfg, key: str, low=None, high=None, *, low_open: bool = False,
             high_open: bool = False) -> None:
  """The number at ``key`` (or each item of a sequence) lies between ``low`` and ``high``
  (inclusive unless the side is open; None: unbounded)."""
  value = get(cfg, key)
  expected = "a number " + _bounds(low, high, low_open, high_open)
  for item in items(value):
    if isinstance(item, bool) or not isinstance(item, numbers.Real):
      raise ConfigError(key, item, expected)
    below = low is not None and (item <= low if low_open else item < low)
    above = high is not None and (item >= high if high_open else item > high)
    if below or above or item != item:
      where = f" (each item of {value!r})" if value is not item else ""
      raise ConfigError(key, item, expected + where)


def positive(cfg, *keys: str) -> None:
  """Every value at ``keys`` (or each item of a sequence there) is > 0."""
  for key in keys:
    in_range(cfg, key, 0, low_open=True)


def divisible(cfg, key: str, by: str) -> None:
  """The integer at ``key`` is a multiple of the positive integer at ``by``."""
  for k in (key, by):
    value = get(cfg, k)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
      raise ConfigError(k, value, "an integer")
  positive(cfg, by)
  value, step = get(cfg, key), get(cfg, by)
  if value % step:
    raise ConfigError(key, value, f"a multiple of {by} = {step}")
