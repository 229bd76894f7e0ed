"""Logical axis names -> mesh axes.

Parameters carry ``logical_axes`` metadata (a tuple of names, one per dimension); activations are
constrained with :func:`shard_activation`. A rule set maps each logical name to a mesh axis (or a
tuple of mesh axes, or None = replicated). Logical names used by the backbones:

``batch``, ``length``, ``embed``, ``vocab``, ``heads`` (flattened q heads × head_dim on a
projection), ``kv_heads`` (flattened kv heads × head_dim), ``act_heads`` / ``act_kv_heads`` (the
heads axis of a ``[B, S, H, D]`` activation), ``head_dim``, ``mlp``, ``norm``, ``layers``.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Rules = tuple[tuple[str, object], ...]

# Fully-sharded data parallel: weights sharded over fsdp on their largest axis; tensor axis
# unused (size 1) in this preset.
LOGICAL_RULES_FSDP: Rules = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
    ("layers", None),
)


def override_rules(rules: Rules, **changes) -> Rules:
  """``rules`` with the mesh axes of the named logical axes replaced."""
  return tuple((name, changes.get(name, target)) for name, target in rules)


# Tensor parallel (Megatron): heads and MLP split over tensor, embed replicated.
LOGICAL_RULES_TP: Rules = override_rules(LOGICAL_RULES_FSDP, embed=None)

_state = threading.local()


@contextlib.contextmanager
def use_mesh_rules(mesh: Mesh | None, rules: Rules = LOGICAL_RULES_FSDP):
  """Makes ``mesh`` and ``rules`` current for :func:`shard_activation` inside the block."""
  prev = getattr(_state, "current", None)
  _state.current = (mesh, rules) if mesh is not None else None
  try:
    yield
  finally:
    _state.current = prev


def current_mesh_rules() -> tuple[Mesh, Rules] | None:
  return getattr(_state, "current", None)


def logical_to_spec(logical_axes: Sequence[str | None] | None, rules: Rules,
                    mesh: Mesh | None = None) -> PartitionSpec:
  """Maps logical names to a PartitionSpec; mesh axes of size 1 or already used are dropped."""
  if logical_axes is None:
    return PartitionSpec()
  table = dict(rules)
  used: set[str] = set()
  out = []
  for name in logical_axes:
    target = table.get(name) if name is not None else None
    axes = (target,) if isinstance(target, str) else tuple(target or ())
    keep = tuple(a for a in axes if a not in used and (mesh is None or mesh.shape.get(a, 1) > 1))
    used.update(keep)
    out.append(None if not keep else keep[0] if len(keep) == 1 else keep)
  return PartitionSpec(*out)


def shard_activation(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
  """``with_sharding_constraint`` by logical names under the current mesh; identity without one."""
  current = current_mesh_rules()
  if current is None:
    return x
  mesh, rules = current
  spec = logical_to_spec(logical_axes, rules, mesh)
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))
