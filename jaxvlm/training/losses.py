"""Loss functions with the trainer's ``loss_fn(model, batch, rng) -> (loss, aux)`` signature."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx


def causal_lm_loss(model: nnx.Module, batch: dict, rng: jax.Array) -> tuple[jax.Array, dict]:
  """Mean next-token cross-entropy over the positions where ``batch["loss_mask"]`` is 1.

  ``loss_mask[t]`` marks token ``t`` as a target (predicted from the logits at ``t - 1``);
  without a ``loss_mask`` every non-padding token after the first is a target.
  """
  del rng
  logits = model(batch["input_ids"], attention_mask=batch.get("attention_mask")).logits
  return lm_loss_from_logits(logits, batch)


def lm_loss_from_logits(logits: jax.Array, batch: dict) -> tuple[jax.Array, dict]:
  """:func:`causal_lm_loss` given the model's ``logits [B, S, V]`` for ``batch["input_ids"]``
  (for models called with more inputs, e.g. the VLMs' pixel values)."""
  ids, attn = batch["input_ids"], batch.get("attention_mask")
  logits = logits[:, :-1].astype(jnp.float32)
  targets = batch.get("loss_mask", attn if attn is not None else jnp.ones_like(ids))[:, 1:]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, ids[:, 1:])
  weight = targets.astype(jnp.float32)
  count = jnp.maximum(weight.sum(), 1.0)
  loss = (ce * weight).sum() / count
  correct = (jnp.argmax(logits, -1) == ids[:, 1:]).astype(jnp.float32)
  return loss, {"token_accuracy": (correct * weight).sum() / count}
