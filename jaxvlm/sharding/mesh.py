"""Device meshes over the axes ``(data, fsdp, tensor)`` and sharded parameter placement.

``make_mesh`` reads the axis sizes from a config (``-1`` = fill with the remaining devices) and,
when ``distributed`` is set, calls ``jax.distributed.initialize`` first so that the mesh spans
every host. ``init_sharded`` builds a module with every parameter created directly in its final
sharding (inside ``jit`` with ``out_shardings``), so no device ever holds a full replica.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxvlm.errors import ConfigError
from jaxvlm.sharding.logical import LOGICAL_RULES_FSDP, LOGICAL_RULES_TP, Rules, logical_to_spec

MESH_AXES = ("data", "fsdp", "tensor")
RULE_PRESETS: dict[str, Rules] = {"fsdp": LOGICAL_RULES_FSDP, "tp": LOGICAL_RULES_TP}


def get_rules(name: str) -> Rules:
  """The logical-axis rule preset called ``name`` (``fsdp`` or ``tp``)."""
  if name not in RULE_PRESETS:
    raise ConfigError("mesh.rules", name, f"one of {sorted(RULE_PRESETS)}")
  return RULE_PRESETS[name]


def mesh_config(**overrides) -> dict:
  """The ``mesh`` block of a run config (what :func:`make_mesh` reads): every device on ``fsdp``
  (``-1`` = the remaining devices), the ``fsdp`` rules, ``jax.distributed`` off; ``overrides``
  replace top-level keys."""
  return dict(dict(data=1, fsdp=-1, tensor=1, rules="fsdp",
                   distributed=dict(enabled=False, coordinator_address="", num_processes=-1,
                                    process_id=-1)), **overrides)


def initialize_distributed(config: Mapping[str, Any] | None) -> None:
  """``jax.distributed.initialize`` from ``config.distributed`` (coordinator, processes, id).

  Empty / None fields are auto-detected by JAX (TPU pods, SLURM); a falsy config does nothing.
  """
  if not config or not config.get("enabled", False):
    return
  kwargs = {k: config.get(k) for k in ("coordinator_address", "num_processes", "process_id")}
  jax.distributed.initialize(**{k: v for k, v in kwargs.items() if v not in (None, "", -1)})


def resolve_axis_sizes(sizes: Sequence[int], num_devices: int) -> tuple[int, ...]:
  """Replaces a single ``-1`` by the quotient that makes the product ``num_devices``."""
  sizes = tuple(int(s) for s in sizes)
  fill = [i for i, s in enumerate(sizes) if s == -1]
  if len(fill) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise ConfigError("mesh", sizes, "positive sizes with at most one -1 (fill)")
  known = math.prod(s for s in sizes if s != -1)
  if fill:
    if num_devices % known:
      raise ConfigError("mesh", sizes, f"fixed sizes dividing the {num_devices} devices")
    sizes = tuple(num_devices // known if s == -1 else s for s in sizes)
  if math.prod(sizes) != num_devices:
    raise ConfigError("mesh", sizes, f"sizes whose product is the {num_devices} devices")
  return sizes


def make_mesh(config: Mapping[str, Any] | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh with axes ``data, fsdp, tensor`` sized by ``config`` (default: all devices on fsdp)."""
  config = config or {}
  initialize_distributed(config.get("distributed"))
  devices = list(devices if devices is not None else jax.devices())
  sizes = resolve_axis_sizes([config.get(a, -1 if a == "fsdp" else 1) for a in MESH_AXES],
                             len(devices))
  return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES)


def param_spec(shape: Sequence[int], logical_axes: Sequence[str | None] | None, rules: Rules,
               mesh: Mesh) -> PartitionSpec:
  """``logical_to_spec`` with mesh axes dropped where they do not divide the dimension."""
  spec = logical_to_spec(logical_axes, rules, mesh)
  out = []
  for dim, entry in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    axes = (entry,) if isinstance(entry, str) else tuple(entry or ())
    keep, size = [], 1
    for a in axes:
      if dim % (size * mesh.shape[a]) == 0:
        keep.append(a)
        size *= mesh.shape[a]
    out.append(None if not keep else keep[0] if len(keep) == 1 else tuple(keep))
  return PartitionSpec(*out)


def _is_var(x) -> bool:
  return isinstance(x, nnx.Variable)


def state_shardings(state: Any, mesh: Mesh, rules: Rules) -> Any:
  """A NamedSharding for every Variable of ``state`` from its ``logical_axes`` metadata."""
  def one(v):
    axes = v.get_metadata().get("logical_axes") if _is_var(v) else None
    value = v.get_value() if _is_var(v) else v
    return NamedSharding(mesh, param_spec(np.shape(value), axes, rules, mesh))
  return jax.tree.map(one, state, is_leaf=_is_var)


def init_sharded(init_fn: Callable[[], nnx.Module], mesh: Mesh | None,
                 rules: Rules = LOGICAL_RULES_FSDP) -> nnx.Module:
  """Calls ``init_fn`` under ``jit`` so that each parameter is born in its rule's sharding."""
  if mesh is None:
    return init_fn()
  graphdef, abstract = nnx.split(nnx.eval_shape(init_fn))
  shardings = state_shardings(abstract, mesh, rules)
  state = jax.jit(lambda: nnx.state(init_fn()), out_shardings=shardings)()
  return nnx.merge(graphdef, state)


def shard_state(state: Any, mesh: Mesh, rules: Rules) -> Any:
  """Places an existing state (e.g. loaded weights) according to the rules."""
  return jax.device_put(state, state_shardings(state, mesh, rules))
