"""Small-sample statistics for reports: a mean with its two-sided 95% Student-t interval."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def mean_ci95(values: Sequence[float]) -> dict:
  """``{"mean", "ci95": [low, high], "n"}`` of ``values`` (e.g. paired differences): the mean
  ± t(0.975, n - 1) · s / √n with the sample std ``s``; the interval is NaN for n < 2."""
  from scipy import stats
  x = np.asarray(values, np.float64)
  n = len(x)
  mean = float(x.mean()) if n else float("nan")
  half = float(stats.t.ppf(0.975, n - 1) * x.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
  return {"mean": mean, "ci95": [mean - half, mean + half], "n": n}
