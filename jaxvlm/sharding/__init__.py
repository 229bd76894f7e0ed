"""Meshes and logical-axis sharding (MaxText-style rules)."""

from jaxvlm.sharding.logical import (
    LOGICAL_RULES_FSDP,
    LOGICAL_RULES_TP,
    logical_to_spec,
    shard_activation,
    use_mesh_rules,
)
from jaxvlm.sharding.mesh import (
    MESH_AXES,
    get_rules,
    init_sharded,
    initialize_distributed,
    make_mesh,
    mesh_config,
    param_spec,
    shard_state,
    state_shardings,
)

__all__ = ["LOGICAL_RULES_FSDP", "LOGICAL_RULES_TP", "MESH_AXES", "get_rules", "init_sharded",
           "initialize_distributed", "logical_to_spec", "make_mesh", "mesh_config", "param_spec",
           "shard_activation", "shard_state", "state_shardings", "use_mesh_rules"]
