"""``jaxvlm compare-checkpoints A B``: which parameters of two Orbax checkpoints differ, how much.

A and B may each be a checkpoint-manager folder (its latest step, or ``--step``), one step folder
(its ``state`` item) or a single Orbax item folder. Per parameter: number and share of elements
that differ by more than ``--atol``, mean and max absolute difference and the relative difference
``||a - b|| / ||a||``; overall totals; names present in only one checkpoint and shape mismatches.
Prints a table of the parameters that changed most and writes everything as JSON (``--json``).
"""

from __future__ import annotations

import argparse
import os
from typing import Mapping

import numpy as np

from jaxvlm import io
from jaxvlm.errors import CheckpointError, MissingFileError


def _item_dir(path: str, step: int | None) -> str:
  """The Orbax item folder (absolute: Orbax refuses relative paths) holding the parameters for a
  manager / step / item folder."""
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise MissingFileError(path, "checkpoint folder")
  steps = sorted(int(d) for d in os.listdir(path) if d.isdigit())
  if steps:
    chosen = step if step is not None else steps[-1]
    if chosen not in steps:
      raise CheckpointError(f"checkpoint {path!r}: step {chosen} not among the saved steps {steps}")
    path = os.path.join(path, str(chosen))
  if os.path.isdir(os.path.join(path, "state")):
    path = os.path.join(path, "state")
  if not any(f.startswith(("_METADATA", "_CHECKPOINT_METADATA", "manifest.ocdbt"))
             for f in os.listdir(path)):
    raise CheckpointError(f"checkpoint {path!r}: not an Orbax checkpoint (no _METADATA file); "
                          "expected a manager folder, a step folder or an item folder")
  return path


def load_params(path: str, step: int | None = None) -> dict[str, np.ndarray]:
  """``{dotted name: numpy array}`` of a checkpoint (the ``params`` entry of a training state)."""
  import jax
  import orbax.checkpoint as ocp
  from jaxvlm.training.checkpoint import flatten, reading
  item, checkpointer = _item_dir(path, step), ocp.PyTreeCheckpointer()
  with reading(item):
    meta = checkpointer.metadata(item)
    # Every leaf as host numpy: restoring a saved jax.Array needs a target sharding otherwise.
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                            getattr(meta, "item_metadata", meta))
    tree = checkpointer.restore(item, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
  if isinstance(tree, Mapping) and "params" in tree:
    tree = tree["params"]
  named, _ = flatten(tree)
  return {k: np.asarray(v) for k, v in named.items() if np.ndim(v) or np.size(v)}


def compare(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], atol: float = 0.0) -> dict:
  """The comparison report of two ``{name: array}`` maps (see the module docstring)."""
  common = sorted(set(a) & set(b))
  shape_mismatch = [{"name": k, "shape_a": list(np.shape(a[k])), "shape_b": list(np.shape(b[k]))}
                    for k in common if np.shape(a[k]) != np.shape(b[k])]
  same_shape = [k for k in common if np.shape(a[k]) == np.shape(b[k])]
  if not same_shape:
    raise CheckpointError(f"no parameter with the same name and shape in both checkpoints "
                          f"({len(a)} vs {len(b)} names, {len(common)} in common)")
  rows, total, n_diff, abs_sum, max_abs = [], 0, 0, 0.0, 0.0
  for k in same_shape:
    x, y = np.asarray(a[k], np.float64), np.asarray(b[k], np.float64)
    d = np.abs(x - y)
    differ = int(np.count_nonzero(d > atol))
    norm_a, norm_d = float(np.linalg.norm(x)), float(np.linalg.norm(x - y))
    rel = norm_d / norm_a if norm_a else (0.0 if norm_d == 0 else float("inf"))
    rows.append({"name": k, "shape": list(x.shape), "size": int(x.size), "n_differ": differ,
                 "share_differ": differ / max(x.size, 1), "mean_abs_diff": float(d.mean()),
                 "max_abs_diff": float(d.max(initial=0.0)),
                 "relative_diff": rel})
    total += x.size
    n_diff += differ
    abs_sum += float(d.sum())
    max_abs = max(max_abs, rows[-1]["max_abs_diff"])
  rows.sort(key=lambda r: -r["relative_diff"])
  return {
      "atol": atol,
      "overall": {"num_params": len(rows), "num_elements": total, "n_differ": n_diff,
                  "share_differ": n_diff / max(total, 1), "mean_abs_diff": abs_sum / max(total, 1),
                  "max_abs_diff": max_abs,
                  "params_differ": sum(r["n_differ"] > 0 for r in rows)},
      "only_in_a": sorted(set(a) - set(b)), "only_in_b": sorted(set(b) - set(a)),
      "shape_mismatch": shape_mismatch, "params": rows,
  }


def format_report(report: dict, top: int = 20) -> str:
  """A terminal table: overall line, the ``top`` most-changed parameters, mismatches."""
  o = report["overall"]
  lines = [f"elements differing (|a-b| > {report['atol']:g}): {o['n_differ']} / {o['num_elements']}"
           f" ({100 * o['share_differ']:.2f}%), in {o['params_differ']} / {o['num_params']} "
           f"parameters; mean |a-b| {o['mean_abs_diff']:.6g}, max |a-b| {o['max_abs_diff']:.6g}",
           "", f"{'parameter':<56} {'differ %':>9} {'mean|a-b|':>11} {'max|a-b|':>11} {'rel':>9}"]
  for r in report["params"][:top]:
    lines.append(f"{r['name'][-56:]:<56} {100 * r['share_differ']:>9.2f} {r['mean_abs_diff']:>11.4g}"
                 f" {r['max_abs_diff']:>11.4g} {r['relative_diff']:>9.4g}")
  for key, label in (("only_in_a", "only in A"), ("only_in_b", "only in B")):
    if report[key]:
      lines.append(f"{label} ({len(report[key])}): {', '.join(report[key][:10])}")
  for m in report["shape_mismatch"]:
    lines.append(f"shape mismatch: {m['name']} {tuple(m['shape_a'])} vs {tuple(m['shape_b'])}")
  return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("a", help="checkpoint A (manager, step or item folder)")
  parser.add_argument("b", help="checkpoint B")
  parser.add_argument("--step-a", type=int, default=None, help="step of A (default latest)")
  parser.add_argument("--step-b", type=int, default=None, help="step of B (default latest)")
  parser.add_argument("--atol", type=float, default=0.0,
                      help="elements differ when |a - b| > atol (default 0: any difference)")
  parser.add_argument("--top", type=int, default=20, help="rows of the table (default 20)")
  parser.add_argument("--json", default=None, help="write the full report to this JSON file")


def main(args: argparse.Namespace) -> int:
  report = compare(load_params(args.a, args.step_a), load_params(args.b, args.step_b), args.atol)
  report["a"], report["b"] = os.path.abspath(args.a), os.path.abspath(args.b)
  print(format_report(report, args.top))
  if args.json:
    io.write_json(args.json, report)
  return 0
