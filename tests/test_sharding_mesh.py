"""Meshes, rule-derived parameter shardings, and one sharded train step == the 1-device step."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxvlm.errors import ConfigError
from jaxvlm.sharding import LOGICAL_RULES_FSDP, LOGICAL_RULES_TP, make_mesh, param_spec
from training_helpers import make_trainer, tiny_llama

# compile-bound (tiny shapes, eager ops): XLA's cheap compile mode (conftest)
pytestmark = pytest.mark.usefixtures("fast_compile")

MESHES = [(8, 1, 1), (2, 4, 1), (1, 2, 4)]


def _mesh(shape):
  return make_mesh(dict(zip(("data", "fsdp", "tensor"), shape)))


def test_make_mesh_fills_and_validates():
  assert dict(make_mesh({"data": 2, "fsdp": -1, "tensor": 2}).shape) == {
      "data": 2, "fsdp": 2, "tensor": 2}
  assert dict(make_mesh().shape) == {"data": 1, "fsdp": 8, "tensor": 1}
  for bad in ({"data": 3, "fsdp": -1}, {"data": -1, "fsdp": -1}, {"data": 2, "fsdp": 2, "tensor": 1}):
    with pytest.raises(ConfigError, match="mesh"):
      make_mesh(bad)


def test_param_spec_drops_non_dividing_and_size_one_axes():
  mesh = _mesh((1, 2, 4))
  assert param_spec((32, 64), ("embed", "mlp"), LOGICAL_RULES_FSDP, mesh) == P("fsdp", "tensor")
  assert param_spec((32, 6), ("embed", "mlp"), LOGICAL_RULES_FSDP, mesh) == P("fsdp", None)
  assert param_spec((32, 64), ("embed", "mlp"), LOGICAL_RULES_TP, mesh) == P(None, "tensor")
  assert param_spec((8, 32), ("batch", None), LOGICAL_RULES_FSDP, _mesh((2, 4, 1))) == P(
      ("data", "fsdp"), None)


@pytest.mark.parametrize("shape", MESHES[1:])
def test_parameters_are_born_with_rule_shardings(shape):
  mesh = _mesh(shape)
  model = tiny_llama(mesh)
  attn = model.model.layers[0].self_attn
  expected = {(1, 2, 4): P("fsdp", "tensor"), (2, 4, 1): P("fsdp", None)}[shape]
  assert attn.q_proj.kernel[...].sharding.spec == expected
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    spec = param_spec(var.shape, var.get_metadata()["logical_axes"], LOGICAL_RULES_FSDP, mesh)
    assert var[...].sharding.spec == spec, path
    # No device holds the full array of a sharded parameter.
    if any(s is not None for s in spec):
      assert var[...].addressable_shards[0].data.size < var[...].size


def test_one_step_matches_single_device():
  ref = make_trainer(tiny_llama(), steps=1)
  batch = next(ref.batches(0, 0))
  ref_loss = float(ref.train_step(batch)["loss"])
  ref_params = jax.tree.map(np.asarray, ref.params)
  for shape in MESHES:
    mesh = _mesh(shape)
    tr = make_trainer(tiny_llama(mesh), mesh=mesh, steps=1)
    loss = float(tr.train_step(batch)["loss"])
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, err_msg=str(shape))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), b, rtol=1e-4, atol=1e-6,
                                                         err_msg=str(shape)), tr.params, ref_params)
    mu = tr.opt_state[1][0].mu.model.layers[0].self_attn.q_proj.kernel[...]
    assert mu.sharding.spec == tr.params.model.layers[0].self_attn.q_proj.kernel[...].sharding.spec
