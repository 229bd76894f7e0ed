"""Resumable SGL runs over a dataset, their files keyed by their settings, and case lists.

:func:`run_samples` runs a batch function (:func:`~jaxvlm.methods.sgl.pipeline.guided_batch` or
:func:`~jaxvlm.methods.sgl.pipeline.single_model_batch`) over samples ordered by visual-token
count (batches of similar sizes; a batch may still mix counts) in the run cache folder
``<root>/<name>-<fingerprint>/`` (:class:`jaxvlm.runcache.RunCache`), the fingerprint hashing
every setting that changes the results (models and their files, modes, keep, prune layer, tiles,
prompts, the data slice) as the caller states them: a run with another setting writes beside,
never over, and never reads another's results. Each finished batch is written atomically to
``parts/`` (a killed run continues where it stopped), then:

* ``results.json`` — one result per sample (question, answers, prediction, VQA accuracy; guided
  runs also the guide / large answers, confidence, consistency, score, exit flag, seconds per
  stage);
* ``summary.json`` — accuracy (overall and per question type), sample count, the folder and
  settings; guided runs also the share of early exits, mean kept / visual tokens and the seconds
  per sample of each stage;
* ``stats.json`` (guided runs) — per-sample normalised guide distributions over the visual
  tokens and both answers, for :func:`compare_stats` between any two runs.

:func:`match_case_list` checks which loaded dataset a case list (question ids) belongs to.
"""

from __future__ import annotations

import glob
import json
import os
from collections import defaultdict
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from jaxvlm import io
from jaxvlm.errors import ConfigError, DataFileError, MissingFileError
from jaxvlm.eval import vqa_accuracy
from jaxvlm.methods.sgl.stats import compare_distributions
from jaxvlm.runcache import RunCache


def _load_parts(parts: str) -> dict[int, dict]:
  done = {}
  for path in sorted(glob.glob(os.path.join(parts, "*.json"))):
    with open(path, encoding="utf-8") as f:
      done.update({r["question_id"]: r for r in json.load(f)})
  return done


def _stage_seconds(results: list[dict]) -> dict:
  """Seconds per stage: totals, means per sample, and means over the warm batches only (see
  :func:`run_samples`)."""
  stages = sorted({k for r in results for k in r.get("seconds", {})})
  total = lambda rows: {k: float(sum(r.get("seconds", {}).get(k, 0.0) for r in rows))
                        for k in stages}
  warm = [r for r in results if r.get("warm")] or results
  all_, hot = total(results), total(warm)
  return {"seconds_total": all_,
          "seconds_per_sample": {k: v / len(results) for k, v in all_.items()},
          "seconds_per_sample_all_stages": sum(all_.values()) / len(results),
          "warm_seconds_per_sample": {k: v / len(warm) for k, v in hot.items()},
          "warm_seconds_per_sample_all_stages": sum(hot.values()) / len(warm),
          "warm_samples": len(warm) if warm is not results else 0}


def run_samples(name: str, cache: RunCache, settings: Mapping, samples: Sequence[Any],
                batch_fn: Callable[..., list[dict]], *, batch_size: int,
                num_visual: Callable[[Any], int], files: Iterable[str] = ()) -> dict:
  """Runs ``batch_fn(samples, step=...)`` over ``samples`` (resuming) in the cache folder of
  ``(name, settings, files)`` and writes the run's files; returns the summary. Batches are padded
  to ``batch_size`` with copies (one compilation serves all); ``step`` is the first question id
  of the batch (seeds the random selection). Runs of equal ``name`` and settings share their
  folder (and results). A batch is warm (its programs were compiled) when an earlier batch of the
  same call had its visual-token counts and its records' ``program_shape`` (what else shaped its
  programs, such as the decoder's rows left after early exit)."""
  folder = cache.entry(name, settings, files)
  parts = os.path.join(folder, "parts")
  done = _load_parts(parts)
  pending = sorted((s for s in samples if s.question_id not in done), key=num_visual)
  seen = set()
  for start in range(0, len(pending), batch_size):
    chunk = pending[start:start + batch_size]
    real = len(chunk)
    chunk += [chunk[-1]] * (batch_size - real)
    step = int(chunk[0].question_id)
    shape = tuple(num_visual(s) for s in chunk)
    records = batch_fn(chunk, step=step)[:real]
    shape += (records[0].get("program_shape"),)
    records = [r | {"warm": shape in seen} for r in records]
    seen.add(shape)
    io.write_json(os.path.join(parts, f"{step:012d}.json"), records)
    done.update({r["question_id"]: r for r in records})
  results = []
  for s in samples:
    r = dict(done[s.question_id])
    r["accuracy"] = vqa_accuracy(r["prediction"], r["answers"])
    results.append(r)
  by_type = defaultdict(list)
  for s, r in zip(samples, results):
    by_type[getattr(s, "question_type", "")].append(r["accuracy"])
  summary = {"folder": folder, "n": len(results),
             "accuracy": float(np.mean([r["accuracy"] for r in results])) if results else 0.0,
             "per_type": {k: float(np.mean(v)) for k, v in sorted(by_type.items())},
             "settings": dict(settings)}
  if results and "exited" in results[0]:
    summary.update(exit_share=float(np.mean([r["exited"] for r in results])),
                   mean_score=float(np.mean([r["score"] for r in results])),
                   mean_kept=float(np.mean([r["num_kept"] for r in results])),
                   mean_visual=float(np.mean([r["num_visual"] for r in results])),
                   **_stage_seconds(results))
    io.write_json(os.path.join(folder, "stats.json"), {
        "question_ids": [r["question_id"] for r in results],
        "distributions": [(np.asarray(r["distribution"]) / max(sum(r["distribution"]), 1e-30)
                           ).tolist() for r in results],
        "small_answers": [r["small_answer"] for r in results],
        "large_answers": [r["large_answer"] for r in results]})
  io.write_json(os.path.join(folder, "results.json"),
                [{k: v for k, v in r.items() if k != "distribution"} for r in results])
  io.write_json(os.path.join(folder, "summary.json"), summary)
  return summary


def read_stats(path: str) -> dict:
  if not os.path.exists(path):
    raise MissingFileError(path, "SGL stats file")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def compare_stats(path_p: str, path_q: str, top_k: int = 16) -> dict:
  """Seed 002 §4 between two runs' ``*_stats.json`` over their common question ids (rows may have
  different token counts, e.g. with dynamic tiling: each pair is compared on its own, then the
  per-sample values are aggregated as :func:`compare_distributions` does)."""
  a, b = read_stats(path_p), read_stats(path_q)
  index_b = {q: i for i, q in enumerate(b["question_ids"])}
  pairs = [(i, index_b[q]) for i, q in enumerate(a["question_ids"]) if q in index_b]
  if not pairs:
    raise DataFileError(path_q, f"no question id in common with {path_p}")
  rows = [compare_distributions([a["distributions"][i]], [b["distributions"][j]], top_k)
          for i, j in pairs]
  overlap = f"avg_top{top_k}_overlap"
  l1 = [r["avg_l1"] for r in rows]
  changed = lambda key: sum(a[key][i] != b[key][j] for i, j in pairs)
  return {"n": len(rows), "avg_l1": float(np.mean(l1)), "median_l1": float(np.median(l1)),
          "avg_jsd": float(np.mean([r["avg_jsd"] for r in rows])),
          overlap: float(np.mean([r[overlap] for r in rows])),
          "top1_same_count": int(sum(r["top1_same_count"] for r in rows)),
          "avg_entropy_delta": float(np.mean([r["avg_entropy_delta"] for r in rows])),
          "changed_small_answer_count": changed("small_answers"),
          "changed_large_answer_count": changed("large_answers")}


def read_case_list(path: str) -> list[dict]:
  """A case list: a JSON list (or ``{"cases": [...]}``) of objects with ``question_id`` (and
  optionally ``question``)."""
  if not os.path.exists(path):
    raise MissingFileError(path, "case list")
  with open(path, encoding="utf-8") as f:
    try:
      data = json.load(f)
    except json.JSONDecodeError as e:
      raise DataFileError(path, f"malformed JSON ({e})") from None
  cases = data.get("cases") if isinstance(data, dict) else data
  if not isinstance(cases, list) or not all(isinstance(c, dict) and "question_id" in c
                                            for c in cases):
    raise DataFileError(path, "expected a list of objects with 'question_id'")
  return cases


def _matches(cases: list[dict], records: Sequence[Any]) -> bool:
  by_id = {r.question_id: r for r in records}
  return all(int(c["question_id"]) in by_id and (
      "question" not in c or c["question"] == by_id[int(c["question_id"])].question)
      for c in cases)


def match_case_list(path: str, datasets: Mapping[str, Sequence[Any]], configured: str) -> list:
  """The records of dataset ``configured`` named by the case list at ``path``, in its order. Match
  against whole datasets (before any ``limit``). A list that matches another of ``datasets``
  (every question id present, questions equal where given) or none raises ``ConfigError`` naming
  what it matches and the case ids the configured dataset lacks."""
  cases = read_case_list(path)
  matching = [name for name, records in datasets.items() if _matches(cases, records)]
  if configured not in matching:
    by_id = {r.question_id: r for r in datasets[configured]}
    absent = [int(c["question_id"]) for c in cases if int(c["question_id"]) not in by_id]
    differ = [int(c["question_id"]) for c in cases if int(c["question_id"]) in by_id
              and "question" in c and c["question"] != by_id[int(c["question_id"])].question]
    found = f"matches {matching}" if matching else "matches no loaded dataset"
    raise ConfigError("data.case_list", path, f"a case list of the configured dataset "
                      f"{configured!r} (it {found}; loaded: {sorted(datasets)}; case ids not in "
                      f"{configured!r}: {absent[:5]}; ids whose question differs: {differ[:5]})")
  by_id = {r.question_id: r for r in datasets[configured]}
  return [by_id[int(c["question_id"])] for c in cases]
