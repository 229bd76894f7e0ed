"""``jaxvlm compare-indices A.json B.json``: do two runs select the same ICD indices per sample?

Each file maps samples to their selected indices, as ``{"<sample id>": [i, j, ...]}``, a list of
index lists (sample id = position), or a list of ``{"id"|"sample_id": ..., "indices"|"icd_indices":
[...]}`` records (optionally under a top-level ``"indices"`` / ``"results"`` key). Reports the share
of samples whose selections are identical (same indices in the same order), and per differing
sample the positions that differ and the set overlap.
"""

from __future__ import annotations

import argparse
from typing import Any

from jaxvlm import io
from jaxvlm.data import records
from jaxvlm.errors import ConfigError, DataFileError

_ID_KEYS, _IDX_KEYS = ("id", "sample_id", "question_id"), ("indices", "icd_indices", "icd_idx")


def _pick(record: dict, keys: tuple, path: str, where: str) -> Any:
  for k in keys:
    if k in record:
      return record[k]
  raise DataFileError(path, f"{where} lacks one of the keys {list(keys)} (has {sorted(record)})")


def _indices(value: Any, path: str, sample: Any) -> list[int]:
  """The integer index list of one sample; floats, bools and non-lists are refused."""
  if not isinstance(value, list) or any(isinstance(i, bool) or not isinstance(i, int)
                                        for i in value):
    raise DataFileError(path, f"sample {sample}: indices {value!r}, expected a list of integers")
  return value


def load_selections(path: str) -> dict[str, list[int]]:
  """``{sample id: [indices]}`` from any of the accepted layouts."""
  data = records.read_json(path, "index selection JSON")
  if isinstance(data, dict) and not any(isinstance(v, list) and all(isinstance(i, int) for i in v)
                                        for v in data.values()):
    data = next((data[k] for k in ("indices", "results") if k in data), data)
  if isinstance(data, dict):
    return {str(k): _indices(v, path, k) for k, v in data.items()}
  if isinstance(data, list) and all(isinstance(r, dict) for r in data):
    out = {}
    for n, r in enumerate(data):
      sample = _pick(r, _ID_KEYS, path, f"record {n}")
      out[str(sample)] = _indices(_pick(r, _IDX_KEYS, path, f"record {n}"), path, sample)
    return out
  if isinstance(data, list):
    return {str(n): _indices(v, path, n) for n, v in enumerate(data)}
  raise DataFileError(path, f"got a JSON {type(data).__name__}, expected an object or list of "
                            "index selections")


def compare(a: dict[str, list[int]], b: dict[str, list[int]]) -> dict:
  """Identical share over the common samples and the per-sample differences."""
  common = sorted(set(a) & set(b), key=lambda s: (len(s), s))
  if not common:
    raise ConfigError("samples", f"{len(a)} vs {len(b)} ids", "at least one sample id in common")
  diffs = []
  for s in common:
    x, y = a[s], b[s]
    if x != y:
      positions = [i for i in range(max(len(x), len(y)))
                   if i >= len(x) or i >= len(y) or x[i] != y[i]]
      overlap = len(set(x) & set(y)) / max(len(set(x) | set(y)), 1)
      diffs.append({"sample": s, "a": x, "b": y, "positions_differ": positions,
                    "set_overlap": overlap, "same_set": set(x) == set(y)})
  same = len(common) - len(diffs)
  return {"num_samples": len(common), "identical": same, "different": len(diffs),
          "identical_share": same / len(common),
          "same_set_share": (same + sum(d["same_set"] for d in diffs)) / len(common),
          "only_in_a": sorted(set(a) - set(b)), "only_in_b": sorted(set(b) - set(a)),
          "differences": diffs}


def format_report(report: dict, top: int = 20) -> str:
  lines = [f"samples compared: {report['num_samples']}; identical: {report['identical']} "
           f"({100 * report['identical_share']:.2f}%); different: {report['different']}; "
           f"same set (any order): {100 * report['same_set_share']:.2f}%"]
  if report["differences"]:
    lines += ["", f"{'sample':<16} {'A':<24} {'B':<24} {'positions':<12} {'overlap':>7}"]
    for d in report["differences"][:top]:
      lines.append(f"{d['sample'][:16]:<16} {str(d['a'])[:24]:<24} {str(d['b'])[:24]:<24} "
                   f"{str(d['positions_differ'])[:12]:<12} {d['set_overlap']:>7.2f}")
  for key, label in (("only_in_a", "only in A"), ("only_in_b", "only in B")):
    if report[key]:
      lines.append(f"{label} ({len(report[key])}): {', '.join(report[key][:10])}")
  return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("a", help="selections of run A (JSON)")
  parser.add_argument("b", help="selections of run B (JSON)")
  parser.add_argument("--top", type=int, default=20, help="differing samples shown (default 20)")
  parser.add_argument("--json", default=None, help="write the full report to this JSON file")


def main(args: argparse.Namespace) -> int:
  report = compare(load_selections(args.a), load_selections(args.b))
  print(format_report(report, args.top))
  if args.json:
    io.write_json(args.json, report)
  return 0
