"""Candidate samplers: the K demonstrations a policy chooses from, per query.

Each sampler maps query ids (and, for similarity, the query embeddings) to ``[N, K]`` indices
into the demonstration pool; a query never gets itself (``exclude``: the pool index of the
query when the query comes from the pool). ``RandSampler`` draws K distinct indices with
``np.random.default_rng([seed, query_id])``, so a query's candidates do not depend on which
other queries are sampled or in what order. ``SimilaritySampler`` takes the top-K pool items by
embedding cosine; ``MixedSampler`` takes ``round(K * similar_share)`` of them and fills the rest
at random.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxvlm.errors import ConfigError

SAMPLERS = ("random", "similarity", "mixed")


def _check(k: int, pool_size: int) -> None:
  if not isinstance(k, (int, np.integer)) or not 1 <= k < pool_size:
    raise ConfigError("sampler.num_candidates", k, f"an integer in [1, pool size - 1 = "
                      f"{pool_size - 1}]")


def _exclude(exclude, n) -> np.ndarray:
  return np.full(n, -1) if exclude is None else np.asarray(exclude)


class RandSampler:
  """K distinct random pool indices per query, reproducible per (seed, query id)."""

  def __init__(self, pool_size: int, k: int, seed: int = 0):
    _check(k, pool_size)
    self.pool_size, self.k, self.seed = pool_size, k, seed

  def _one(self, qid: int, skip: int, taken=()) -> list[int]:
    order = np.random.default_rng([self.seed, int(qid)]).permutation(self.pool_size)
    bad = set(taken) | {int(skip)}
    return [int(i) for i in order if i not in bad]

  def __call__(self, query_ids: Sequence[int], exclude=None, query_emb=None) -> np.ndarray:
    ex = _exclude(exclude, len(query_ids))
    return np.array([self._one(q, e)[:self.k] for q, e in zip(query_ids, ex)], np.int64)


class SimilaritySampler:
  """Top-K pool items by cosine between the query embedding and the pool embeddings."""

  def __init__(self, pool_emb: np.ndarray, k: int):
    _check(k, len(pool_emb))
    self.pool = pool_emb / np.maximum(np.linalg.norm(pool_emb, axis=-1, keepdims=True), 1e-12)
    self.k = k

  def ranked(self, query_emb: np.ndarray, exclude) -> np.ndarray:
    q = query_emb / np.maximum(np.linalg.norm(query_emb, axis=-1, keepdims=True), 1e-12)
    sim = q @ self.pool.T
    ex = _exclude(exclude, len(q))
    rows = np.nonzero(ex >= 0)[0]
    sim[rows, ex[rows]] = -np.inf
    return np.argsort(-sim, axis=-1, kind="stable")

  def __call__(self, query_ids, exclude=None, query_emb=None) -> np.ndarray:
    if query_emb is None:
      raise ConfigError("query_emb", None, "query embeddings for the similarity sampler")
    return self.ranked(query_emb, exclude)[:, :self.k]


class MixedSampler:
  """``round(K * similar_share)`` most similar items, the rest random (distinct, seeded)."""

  def __init__(self, pool_emb: np.ndarray, k: int, seed: int = 0, similar_share: float = 0.5):
    if not 0.0 <= similar_share <= 1.0:
      raise ConfigError("sampler.similar_share", similar_share, "a value in [0, 1]")
    self.similar = SimilaritySampler(pool_emb, k)
    self.random = RandSampler(len(pool_emb), k, seed)
    self.k, self.n_sim = k, int(round(k * similar_share))

  def __call__(self, query_ids, exclude=None, query_emb=None) -> np.ndarray:
    if query_emb is None:
      raise ConfigError("query_emb", None, "query embeddings for the mixed sampler")
    ex = _exclude(exclude, len(query_ids))
    top = self.similar.ranked(query_emb, ex)[:, :self.n_sim]
    return np.array([list(t) + self.random._one(q, e, t)[:self.k - self.n_sim]
                     for q, e, t in zip(query_ids, ex, top.tolist())], np.int64)


def make_sampler(name: str, pool_emb: np.ndarray, k: int, seed: int = 0,
                 similar_share: float = 0.5):
  if name == "random":
    return RandSampler(len(pool_emb), k, seed)
  if name == "similarity":
    return SimilaritySampler(pool_emb, k)
  if name == "mixed":
    return MixedSampler(pool_emb, k, seed, similar_share)
  raise ConfigError("sampler.name", name, f"one of {SAMPLERS}")
