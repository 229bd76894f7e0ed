"""Training a guide that shares the large model's vision tower (tiny preset).

:func:`with_vision_tower` copies a tower into a freshly built guide; :func:`frozen_tower_loss`
is the guide's Trainer ``loss_fn``: the answer cross-entropy with the tower's features under
``stop_gradient``. With weight decay 0 the tower's AdamW updates are exactly zero, so the trained
guide's tower stays bit-identical to the large model's and :func:`~jaxvlm.methods.sgl.pipeline.
shares_vision` holds.
"""

from __future__ import annotations

import jax
from flax import nnx

from jaxvlm.data import vlm_batches
from jaxvlm.training.losses import lm_loss_from_logits


def with_vision_tower(model, source):
  """``model`` with ``source``'s vision tower weights (copied)."""
  nnx.update(model.vision_tower, jax.tree.map(lambda x: x.copy(), nnx.state(source.vision_tower)))
  return model


def frozen_tower_loss(model, batch: dict, rng: jax.Array):
  """:func:`jaxvlm.training.vlm.vlm_lm_loss` with the vision tower frozen."""
  del rng
  inputs = vlm_batches.model_inputs(model, batch)
  features = jax.lax.stop_gradient(model.vision_features(inputs.pop("pixel_values")))
  image = model.multi_modal_projector(features)
  logits = model(**inputs, image_features=image.reshape(-1, image.shape[-1])).logits
  return lm_loss_from_logits(logits, batch)
