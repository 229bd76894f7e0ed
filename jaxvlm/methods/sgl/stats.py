"""Seed 002 §4: compare two runs' per-sample guide attention distributions over visual tokens."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxvlm.errors import ShapeError


def _normalise(x, field: str) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.ndim != 2 or (x < 0).any() or (x.sum(1) <= 0).any():
    raise ShapeError(field, x.shape, "a non-negative [n, N] array with positive row sums")
  return x / x.sum(1, keepdims=True)


def _entropy(p: np.ndarray) -> np.ndarray:
  return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)


def compare_distributions(p, q, top_k: int = 16, answers_p: Sequence[tuple[str, str]] | None = None,
                          answers_q: Sequence[tuple[str, str]] | None = None) -> dict:
  """Statistics of rows ``p, q [n, N]`` (each row normalised here), natural log.

  ``avg_l1`` / ``median_l1`` of ``sum |p - q|``, ``avg_jsd``, ``avg_top{k}_overlap`` (shared
  indices of the two top-k sets), ``top1_same_count``, ``avg_entropy_delta`` = mean H(q) - H(p);
  with ``answers_*`` (per sample ``(small answer, large answer)``) also
  ``changed_small_answer_count`` / ``changed_large_answer_count``.
  """
  p, q = _normalise(p, "p"), _normalise(q, "q")
  if p.shape != q.shape:
    raise ShapeError("q", q.shape, f"the shape of p {p.shape}")
  k = min(top_k, p.shape[1])
  l1 = np.abs(p - q).sum(1)
  m = (p + q) / 2
  kl = lambda a: np.sum(np.where(a > 0, a * np.log(np.where(a > 0, a, 1) / np.where(m > 0, m, 1)),
                                 0.0), 1)
  top = lambda a: np.argsort(-a, axis=1, kind="stable")[:, :k]
  overlap = [len(set(a) & set(b)) for a, b in zip(top(p), top(q))]
  out = {"n": int(p.shape[0]), "avg_l1": float(l1.mean()), "median_l1": float(np.median(l1)),
         "avg_jsd": float(((kl(p) + kl(q)) / 2).mean()),
         f"avg_top{top_k}_overlap": float(np.mean(overlap)),
         "top1_same_count": int((p.argmax(1) == q.argmax(1)).sum()),
         "avg_entropy_delta": float((_entropy(q) - _entropy(p)).mean())}
  if answers_p is not None and answers_q is not None:
    out["changed_small_answer_count"] = sum(a[0] != b[0] for a, b in zip(answers_p, answers_q))
    out["changed_large_answer_count"] = sum(a[1] != b[1] for a, b in zip(answers_p, answers_q))
  return out
