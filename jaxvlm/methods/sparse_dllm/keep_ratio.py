"""Per-head adaptive keep ratios for sparse attention in diffusion LLMs (seed 001).

Pipeline: head importance ``[layers, kv_heads]`` -> normalisation (percentile clip, default
5th-95th, mapped to [0, 1]) -> relative weights with global mean 1 -> keep ratios.

Modes:
  * ``relative``: ``clip(w * select, min_keep, 1)`` (the seed's mode; the mean falls short of
    ``select`` once heads hit the cap).
  * ``exact_mean``: ``clip(a * w, min_keep, 1)`` with the scale ``a`` solved exactly (water-filling)
    so that the mean equals ``select``: the mass cut off at the cap goes to the uncapped heads.
  * ``uniform``: every head keeps ``select``.

Relative weights are ``(floor + (1 - floor) * n) / mean(...)`` for normalised importance ``n``.
The seed does not publish how a zero-importance head is weighted (its weights span
[0.60, 2.10], about 3.5x); ``weight_floor`` (default 0.3, at most 1/0.3 = 3.3x between heads)
is our decision and a config option.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from jaxvlm.errors import ConfigError, ShapeError

MODES = ("relative", "exact_mean", "uniform")
CAP_TOL = 1e-9


def load_importance(path: str) -> np.ndarray:
  """Reads precomputed head importance ``[layers, kv_heads]`` from a .npy or .json file.

  A .json file holds either the nested list or an object with an ``"importance"`` entry.
  """
  if not os.path.exists(path):
    raise ConfigError("importance_path", path, "an existing .npy or .json file")
  if path.endswith(".npy"):
    scores = np.load(path)
  elif path.endswith(".json"):
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
    scores = np.asarray(data["importance"] if isinstance(data, dict) else data)
  else:
    raise ConfigError("importance_path", path, "a file ending in .npy or .json")
  return check_importance(scores)


def check_importance(scores: Any) -> np.ndarray:
  """Returns ``scores`` as float64 ``[layers, kv_heads]``, finite, or raises ShapeError."""
  scores = np.asarray(scores, dtype=np.float64)
  if scores.ndim != 2 or scores.size == 0:
    raise ShapeError("importance", scores.shape, "a non-empty [layers, kv_heads] array")
  if not np.all(np.isfinite(scores)):
    raise ShapeError("importance", "non-finite values", "finite scores")
  return scores


def normalize_importance(scores: np.ndarray, low_pct: float = 5.0,
                         high_pct: float = 95.0) -> np.ndarray:
  """Clips to the global [low_pct, high_pct] percentiles and maps linearly to [0, 1].

  Constant scores (no spread) map to all ones.
  """
  scores = check_importance(scores)
  if not 0.0 <= low_pct < high_pct <= 100.0:
    raise ConfigError("percentiles", (low_pct, high_pct), "0 <= low < high <= 100")
  lo, hi = np.percentile(scores, [low_pct, high_pct])
  if hi - lo <= 0.0:
    return np.ones_like(scores)
  return (np.clip(scores, lo, hi) - lo) / (hi - lo)


def relative_weights(normalized: np.ndarray, weight_floor: float = 0.3) -> np.ndarray:
  """Weights ``floor + (1 - floor) * n`` divided by their global mean (so they average 1)."""
  if not 0.0 < weight_floor <= 1.0:
    raise ConfigError("weight_floor", weight_floor, "a value in (0, 1]")
  raw = weight_floor + (1.0 - weight_floor) * np.asarray(normalized, dtype=np.float64)
  return raw / raw.mean()


def _exact_mean_scale(weights: np.ndarray, select: float, min_keep: float) -> float:
  """Solves ``mean(clip(a * w, min_keep, 1)) == select`` for ``a`` (piecewise linear in a)."""
  w = weights.ravel()
  w = w[w > 0]
  if w.size == 0:
    raise ConfigError("importance", "all weights zero", "at least one positive weight")
  knots = np.unique(np.concatenate([min_keep / w, 1.0 / w]))

  def mean_at(a):
    return np.clip(np.multiply.outer(a, weights.ravel()), min_keep, 1.0).mean(-1)

  values = mean_at(knots)
  i = int(np.searchsorted(values, select))
  if i == 0:
    return float(knots[0])
  if i >= knots.size:
    return float(knots[-1])
  a0, a1, f0, f1 = knots[i - 1], knots[i], values[i - 1], values[i]
  return float(a0 + (select - f0) * (a1 - a0) / (f1 - f0))


def keep_ratios(weights: np.ndarray, select: float, mode: str = "relative",
                min_keep: float = 0.01) -> np.ndarray:
  """Per-head keep ratios ``[layers, kv_heads]`` in [min_keep, 1] for target mean ``select``."""
  weights = check_importance(weights)
  if mode not in MODES:
    raise ConfigError("mode", mode, f"one of {MODES}")
  if not 0.0 < min_keep <= 1.0:
    raise ConfigError("min_keep", min_keep, "a value in (0, 1]")
  if not min_keep <= select <= 1.0:
    raise ConfigError("select", select, f"a value in [min_keep={min_keep}, 1]")
  if mode == "uniform":
    return np.full_like(weights, select)
  if mode == "relative":
    return np.clip(weights * select, min_keep, 1.0)
  return np.clip(_exact_mean_scale(weights, select, min_keep) * weights, min_keep, 1.0)


def adaptive_keep_ratios(importance: np.ndarray, select: float, mode: str = "relative",
                         min_keep: float = 0.01, weight_floor: float = 0.3,
                         percentiles: tuple[float, float] = (5.0, 95.0)) -> np.ndarray:
  """Importance -> normalised -> relative weights -> keep ratios (the whole pipeline)."""
  weights = relative_weights(normalize_importance(importance, *percentiles), weight_floor)
  return keep_ratios(weights, select, mode, min_keep)


def keep_ratio_summary(keep: np.ndarray, select: float,
                       weights: np.ndarray | None = None) -> dict[str, Any]:
  """Report statistics: target vs actual mean, heads at the cap, per-layer min/max, weights."""
  keep = np.asarray(keep, dtype=np.float64)
  at_cap = int(np.sum(keep >= 1.0 - CAP_TOL))
  out = {
      "select": float(select),
      "target_mean": float(select),
      "actual_mean": float(keep.mean()),
      "deviation": float(select - keep.mean()),
      "heads_at_cap": at_cap,
      "num_heads": int(keep.size),
      "frac_at_cap": at_cap / keep.size,
      "layer_min": keep.min(axis=1).tolist(),
      "layer_max": keep.max(axis=1).tolist(),
      "layer_mean": keep.mean(axis=1).tolist(),
  }
  if weights is not None:
    out.update(weight_mean=float(np.mean(weights)), weight_min=float(np.min(weights)),
               weight_max=float(np.max(weights)))
  return out

