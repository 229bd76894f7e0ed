"""InfoScore beam search (Lever-LM): supervised ICD sequences from the VLM's answer probability.

``InfoScore(c | S) = P(y | x, S + [c]) - P(y | x, S)`` for query ``x`` with answer ``y`` and
already chosen demonstrations ``S``. Beam search over each query's K candidates keeps the
``beam_size`` sequences with the largest summed InfoScore (= ``P(y | x, S) - P(y | x, [])``).
``prob_fn(query_rows, shot_lists) -> probs`` scores a whole flat batch of (query, ICD list)
prompts at once (the VLM side batches and jit-compiles it, see :mod:`.icl`). Results are
appended to a jsonl cache, one line per query, and reused on the next call.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from jaxvlm import runcache
from jaxvlm.methods.icd.policy import check_shots

ProbFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def beam_search(prob_fn: ProbFn, query_rows: Sequence[int], candidates: np.ndarray, shots: int,
                beam_size: int) -> list[dict]:
  """Per query: ``beams`` (candidate positions, best first), ``icd_indices`` (pool indices),
  ``scores`` (summed InfoScore) and ``infoscores`` (per shot)."""
  n, k = candidates.shape
  check_shots(shots, k)
  rows = np.asarray(query_rows)
  base = prob_fn(rows, np.zeros((n, 0), np.int64))
  beams = [[((), float(base[q]), ())] for q in range(n)]  # (positions, P(y|x,S), infoscores)
  for _ in range(shots):
    flat = [(q, b, c) for q in range(n) for b, (seq, _, _) in enumerate(beams[q])
            for c in range(k) if c not in seq]
    qs = np.array([q for q, _, _ in flat])
    shot_lists = np.array([candidates[q, list(beams[q][b][0]) + [c]] for q, b, c in flat])
    probs = prob_fn(rows[qs], shot_lists)
    grown = [[] for _ in range(n)]
    for (q, b, c), p in zip(flat, probs):
      seq, prev, infos = beams[q][b]
      grown[q].append((seq + (c,), float(p), infos + (float(p) - prev,)))
    beams = [sorted(g, key=lambda x: -x[1])[:beam_size] for g in grown]
  return [{"beams": [list(s) for s, _, _ in bs],
           "icd_indices": [[int(i) for i in candidates[q, list(s)]] for s, _, _ in bs],
           "scores": [p - float(base[q]) for _, p, _ in bs],
           "infoscores": [list(i) for _, _, i in bs]} for q, bs in enumerate(beams)]


def cached_beam_search(path: str, prob_fn: ProbFn, query_ids: Sequence[int],
                       query_rows: Sequence[int], candidates: np.ndarray, shots: int,
                       beam_size: int, chunk: int = 16, progress: bool = True) -> list[dict]:
  """:func:`beam_search` with a jsonl cache at ``path`` (``{"query_id", ...}`` per line);
  queries already in the file are read back, the rest computed ``chunk`` queries at a time and
  appended (an interrupted run resumes; a line torn by a kill during the append is dropped and
  its query recomputed, :func:`jaxvlm.runcache.read_jsonl`)."""
  done = {rec["query_id"]: rec for rec in runcache.read_jsonl(path)}
  todo = [i for i, q in enumerate(query_ids) if int(q) not in done]
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  for s in tqdm(range(0, len(todo), chunk), desc="infoscore beams", disable=not progress):
    part = todo[s:s + chunk]
    results = beam_search(prob_fn, [query_rows[i] for i in part], candidates[part], shots,
                          beam_size)
    for i, rec in zip(part, results):
      rec = {"query_id": int(query_ids[i]), **rec}
      done[rec["query_id"]] = rec
      runcache.append_jsonl(path, rec)
  return [done[int(q)] for q in query_ids]
