"""Training the tiny pair: a guide that shares the large model's vision tower, and a large model
that tolerates missing visual tokens.

:func:`with_vision_tower` copies a tower into a freshly built guide; :func:`frozen_tower_loss`
is the guide's Trainer ``loss_fn``: the answer cross-entropy with the tower's features under
``stop_gradient``. With weight decay 0 the tower's AdamW updates are exactly zero, so the trained
guide's tower stays bit-identical to the large model's and :func:`~jaxvlm.methods.sgl.pipeline.
shares_vision` holds. :func:`visual_dropout_loss` trains the large model with visual tokens
dropped at random from layer 0 (what layer-0 pruning does), so that a small model, unlike a
pretrained 8B, does not fail merely because tokens are missing; the drop is uniform, so it
favours neither guided nor random selection.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvlm.data import vlm_inputs
from jaxvlm.training.losses import lm_loss_from_logits


def with_vision_tower(model, source):
  """``model`` with ``source``'s vision tower weights (copied)."""
  nnx.update(model.vision_tower, jax.tree.map(lambda x: x.copy(), nnx.state(source.vision_tower)))
  return model


def frozen_tower_loss(model, batch: dict, rng: jax.Array):
  """:func:`jaxvlm.training.vlm.vlm_lm_loss` with the vision tower frozen."""
  del rng
  inputs = vlm_inputs.model_kwargs(model, batch)
  features = jax.lax.stop_gradient(model.vision_features(inputs.pop("pixel_values")))
  image = model.multi_modal_projector(features)
  logits = model(**inputs, image_features=image.reshape(-1, image.shape[-1])).logits
  return lm_loss_from_logits(logits, batch)


def visual_dropout_loss(keep_ratios=(1.0, 0.4, 0.09)):
  """A ``loss_fn``: per example a keep ratio is drawn from ``keep_ratios`` and each visual token
  is kept with that probability; dropped tokens are masked as keys from layer 0 on with every
  other token at its original position (equal to pruning them at layer 0)."""
  ratios = jnp.asarray(keep_ratios, jnp.float32)

  def loss_fn(model, batch: dict, rng: jax.Array):
    inputs = vlm_inputs.model_kwargs(model, batch)
    ids, mask = jnp.asarray(inputs["input_ids"]), jnp.asarray(inputs["attention_mask"])
    pick, draw = jax.random.split(rng)
    ratio = jax.random.choice(pick, ratios, (ids.shape[0], 1))
    drop = (ids == model.config.image_token_id) & (jax.random.uniform(draw, ids.shape) >= ratio)
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
    logits = model(**inputs | {"attention_mask": mask * ~drop, "position_ids": positions}).logits
    return lm_loss_from_logits(logits, batch)
  return loss_fn
