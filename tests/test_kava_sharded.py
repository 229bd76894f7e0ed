"""One KAVA train step on 8 simulated devices (meshes (2, 4) and (8, 1)) equals one device."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from jaxvlm import models
from jaxvlm.data import sft
from jaxvlm.layers import lora
from jaxvlm.methods import kava
from jaxvlm.sharding import make_mesh
from jaxvlm.training import TrainConfig, Trainer
from test_kava_core import TINY, random_batch

# compile-bound (tiny shapes, eager ops): XLA's cheap compile mode (conftest)
pytestmark = pytest.mark.usefixtures("fast_compile")


def _trainer(mesh):
  lm = models.from_config(TINY, seed=0, mesh=mesh)
  lora.apply_lora(lm, rank=4, alpha=8.0, dropout=0.0, seed=0)
  model = kava.KavaModel(lm, "mlp", 90, 91, 92, seed=0)
  batch = random_batch(np.random.default_rng(0), b=8)
  cfg = kava.KavaConfig(num_latents=3, iterations=2)
  # eps 1e-3: an element whose gradient is near 0 gets a well-conditioned step (with eps 1e-8
  # Adam steps it by about +-lr whatever the sign noise of a sharded sum)
  return Trainer(model, dict(lr=1e-2, warmup_steps=0, eps=1e-3), kava.make_loss_fn(cfg, 2),
                 sft.batch_factory(batch, 8), mesh, config=TrainConfig(steps=1, progress=False),
                 trainable=nnx.Any(nnx.LoRAParam, kava.LatentParam)), batch


def test_kava_step_on_meshes_matches_single_device():
  ref, batch = _trainer(None)
  ref_metrics = {k: float(v) for k, v in ref.train_step(batch).items()}
  ref_params = jax.tree.map(np.asarray, ref.params)
  for shape in ((2, 4), (8, 1)):
    mesh = make_mesh({"data": shape[0], "fsdp": shape[1], "tensor": 1})
    tr, _ = _trainer(mesh)
    metrics = tr.train_step(batch)
    for k, v in ref_metrics.items():
      np.testing.assert_allclose(float(metrics[k]), v, rtol=2e-5, atol=1e-6, err_msg=f"{shape} {k}")
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), b, rtol=1e-4, atol=1e-6,
                                                         err_msg=str(shape)), tr.params, ref_params)
