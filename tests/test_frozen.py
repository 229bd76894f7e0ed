"""jaxvlm.frozen: one graph split reused inside ``freeze``, and ``frozen.jit``."""

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvlm import frozen


class Tiny(nnx.Module):
  def __init__(self, seed: int):
    self.linear = nnx.Linear(3, 2, rngs=nnx.Rngs(seed))

  def __call__(self, x):
    return self.linear(x)


def test_split_is_reused_inside_freeze_and_fresh_outside():
  a, b = Tiny(0), Tiny(1)
  with frozen.freeze(a):
    first, second = frozen.split(a)[1], frozen.split(a)[1]
    assert first is second
    assert frozen.split(b)[1] is not frozen.split(b)[1]  # b is not frozen
    with frozen.freeze(a, b):  # nesting: the inner block has its own split of a
      inner = frozen.split(a)[1]
      assert inner is not first and frozen.split(b)[1] is frozen.split(b)[1]
    assert frozen.split(a)[1] is first  # restored on exit
    assert frozen.split(b)[1] is not frozen.split(b)[1]
  assert frozen.split(a)[1] is not frozen.split(a)[1]


def test_jit_equals_the_eager_call_and_sees_new_weights_outside_freeze():
  model = Tiny(0)
  run = frozen.jit(lambda m, x: m(x))
  x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 3)), jnp.float32)
  np.testing.assert_allclose(run(model, x), model(x), rtol=1e-6)
  model.linear.kernel[...] = model.linear.kernel[...] * 2  # a weight update between blocks
  np.testing.assert_allclose(run(model, x), model(x), rtol=1e-6)


def test_frozen_graph_hashes_once_and_shares_the_jit_cache(monkeypatch):
  """Inside ``freeze`` calls do not re-hash the graph (jit hashes static arguments per call) and
  reuse what was compiled outside the block."""
  model = Tiny(0)
  traces = []
  run = frozen.jit(lambda m, x: traces.append(1) or m(x))
  x = jnp.ones((2, 3), jnp.float32)
  run(model, x)
  walks = []
  plain_hash = nnx.GraphDef.__hash__
  monkeypatch.setattr(nnx.GraphDef, "__hash__", lambda g: walks.append(1) or plain_hash(g))
  with frozen.freeze(model):
    graphdef = frozen.split(model)[0]
    walks.clear()
    for _ in range(3):
      run(model, x)
    assert not walks and len(traces) == 1  # no graph walk, no second trace
    assert graphdef == nnx.split(model)[0] == graphdef
    assert hash(graphdef) == plain_hash(nnx.split(model)[0])
