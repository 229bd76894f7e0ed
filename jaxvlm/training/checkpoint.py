"""Orbax checkpoints of a training run: arrays by readable name, plus JSON metadata.

A checkpoint step folder holds two items: ``state`` (a flat dict ``{"params": {name: array},
"opt_state": {name: array}, "rng": key data}``; names are dotted attribute paths such as
``model.layers.0.self_attn.q_proj.kernel``) and ``meta`` (JSON: step, data position, seed,
architecture config, run config). Saves are asynchronous and atomic (Orbax writes into a
temporary folder and renames it when complete), so a process killed mid-save leaves the previous
checkpoint as the latest one. Restoring takes the target shardings from the caller, so a
checkpoint written on one mesh restores onto any other. A file that Orbax or TensorStore cannot
decode ends a restore in one :class:`CheckpointError` naming that file (:func:`reading`).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
from typing import Any, Iterator, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxvlm import runcache
from jaxvlm.errors import CheckpointError


def path_name(path: tuple) -> str:
  """Dotted name of a pytree key path (``GetAttrKey('value')`` of nnx Variables dropped)."""
  parts = []
  for k in path:
    name = getattr(k, "key", getattr(k, "name", getattr(k, "idx", None)))
    if isinstance(k, jax.tree_util.GetAttrKey) and name == "value":
      continue
    parts.append(str(name))
  return ".".join(parts)


def flatten(tree: Any) -> tuple[dict[str, Any], Any]:
  """``({name: leaf}, treedef)`` of a pytree."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
  return {path_name(p): x for p, x in leaves}, treedef


def unflatten(treedef: Any, named: Mapping[str, Any], like: Mapping[str, Any]) -> Any:
  """Inverse of :func:`flatten` (``like`` gives the leaf order)."""
  return jax.tree_util.tree_unflatten(treedef, [named[k] for k in like])


def config_diff(saved: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, tuple]:
  """``{key: (saved, current)}`` for every key whose value differs (or exists on one side)."""
  keys = sorted(set(saved) | set(current))
  return {k: (saved.get(k), current.get(k)) for k in keys
          if _plain(saved.get(k)) != _plain(current.get(k))}


def _plain(x):
  """The value as it reads back from JSON (tuples become lists)."""
  return json.loads(json.dumps(x, default=str))


_LOCAL_FILE = re.compile(r'local file "([^"]+)"')
_VALUE_SIZE = re.compile(r"for value of size (\d+)")
_METADATA_FILES = ("_CHECKPOINT_METADATA", "_METADATA", "metadata")


def corrupt_file(folder: str, error: BaseException) -> str:
  """The file of checkpoint ``folder`` that ``error`` (raised while reading it) comes from: the
  last file TensorStore names (a data file of the size it reports, when it names only the
  database folder), else the first metadata JSON file that does not parse, else ``folder``."""
  named = _LOCAL_FILE.findall(str(error))
  if named and os.path.isfile(named[-1]):
    return named[-1]
  size = _VALUE_SIZE.search(str(error))
  if named and size:
    matches = [f for f in glob.glob(os.path.join(glob.escape(named[-1]), "**"), recursive=True)
               if os.path.isfile(f) and os.path.getsize(f) == int(size[1])]
    if len(matches) == 1:
      return matches[0]
  for path in sorted(glob.glob(os.path.join(glob.escape(folder), "**"), recursive=True)):
    if os.path.basename(path) in _METADATA_FILES and os.path.isfile(path):
      try:
        with open(path, "rb") as f:
          json.loads(f.read())
      except ValueError:
        return path
  return named[-1] if named else folder


@contextlib.contextmanager
def reading(folder: str) -> Iterator[None]:
  """Turns a decoding error raised while reading checkpoint ``folder`` into one
  :class:`CheckpointError` naming the corrupt file and the reason."""
  try:
    yield
  except CheckpointError:
    raise
  except (ValueError, OSError) as e:
    if isinstance(e, OSError) and e.filename is not None:
      raise
    reason = " ".join(str(e).split(" [tensorstore_spec")[0].split())
    reason = reason.rsplit('": ', 1)[-1] if _LOCAL_FILE.search(reason) else reason
    raise CheckpointError(f"checkpoint file {corrupt_file(folder, e)!r} is corrupt or truncated "
                          f"({type(e).__name__}: {reason[:300]})") from None


def refuse_other_settings(directory: str, run_config: Mapping[str, Any], ignore=()) -> None:
  """Raises :class:`SettingsChangedError` naming the keys (but ``ignore``) in which the run config
  of the latest checkpoint in ``directory`` (if any) differs from ``run_config``: resuming from it,
  or saving beside it, would mix the results of two settings."""
  if not os.path.isdir(directory):
    return
  checkpointer = Checkpointer(directory)
  try:
    step = checkpointer.latest_step()
    if step is not None:
      saved = checkpointer.read_meta(step).get("run_config") or {}
      runcache.refuse_changed(f"checkpoint {os.path.join(checkpointer.directory, str(step))}",
                              saved, run_config, ignore,
                              remedy="use another run folder, or the settings it was trained under")
  finally:
    checkpointer.close()


def _abstract(x):
  if isinstance(x, np.ndarray):  # host arrays restore as numpy
    return x
  sharding = getattr(x, "sharding", None)
  return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)


class Checkpointer:
  """``ocp.CheckpointManager`` saving every ``every`` steps (and when forced), keeping ``keep``."""

  def __init__(self, directory: str, every: int = 0, keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, save_interval_steps=max(every, 1), enable_async_checkpointing=async_save,
        create=True)
    self.every = every
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "meta"))

  def should_save(self, step: int) -> bool:
    return self.every > 0 and step % self.every == 0

  def save(self, step: int, state: Mapping[str, Any], meta: Mapping[str, Any],
           force: bool = False) -> bool:
    """Starts an (async) save of ``state`` and ``meta`` at ``step``; returns whether it saved."""
    if step in self.manager.all_steps():
      return False
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(dict(state)), meta=ocp.args.JsonSave(dict(meta))), force=force)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def read_meta(self, step: int) -> dict:
    with reading(os.path.join(self.directory, str(step))):
      return self.manager.restore(step, args=ocp.args.Composite(
          meta=ocp.args.JsonRestore()))["meta"]

  def restore(self, step: int, like: Mapping[str, Any],
              arch_config: Mapping[str, Any] | None = None) -> tuple[dict, dict]:
    """Restores step ``step`` into arrays shaped and sharded like ``like``; checks the config.

    Raises ``CheckpointError`` naming the differing keys when ``arch_config`` is given and the
    saved architecture config differs.
    """
    meta = self.read_meta(step)
    if arch_config is not None:
      diff = config_diff(meta.get("arch_config") or {}, arch_config)
      if diff:
        details = "; ".join(f"{k}: saved {a!r}, current {b!r}" for k, a, b in
                            ((k, *v) for k, v in diff.items()))
        raise CheckpointError(f"checkpoint {self.directory} step {step}: architecture config "
                              f"differs from the current one in {sorted(diff)} ({details})")
    target = jax.tree.map(_abstract, dict(like))
    with reading(os.path.join(self.directory, str(step))):
      state = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target)))["state"]
    return state, meta

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
