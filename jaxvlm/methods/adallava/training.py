"""Budget-sampled training of :class:`AdaLlava` on the one Trainer (LM loss only).

* :func:`sample_budget` — per batch, a layer count uniform over the achievable ones
  (``prefix .. L``), then a budget uniform over the budgets that give it, so the controller sees
  budgets all over ``[min_budget, 1]``.
* :func:`batch_factory` — the LLaVA instruction json of ``data.instruct_json`` (every assistant
  turn a loss target, :mod:`jaxvlm.data.llava_instruct`) encoded once through the folder's
  processor and chat template (:func:`jaxvlm.data.vlm_inputs.encode`), with the latency token
  inserted after the image tokens (:func:`jaxvlm.models.multimodal.insert_token`, the loss mask
  shifted with it) and ``budget [B]``.
* :func:`loss_fn` — Gumbel top-K over the visual tokens (the straight-through mask gates the
  attention weights of their keys, :func:`key_gated_attention`; positions renumbered over the
  kept tokens as at inference), Gumbel top-k over the layers (every layer computed, gated; head
  granularity: also over the units of each layer, every unit computed, gated), next-token CE.
* :func:`trainable_filter` — ``lora`` (adapters + AdaLLaVA heads), ``full`` or ``heads``.
* :func:`check_checkpoint` — a Trainer checkpoint must hold the scheduler, controller and
  latency encoder before a budget run loads it.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from jaxvlm.data import llava_instruct, sft, vlm_inputs
from jaxvlm.errors import CheckpointError, ConfigError
from jaxvlm.models import multimodal as mm
from jaxvlm.training.checkpoint import Checkpointer
from jaxvlm.training.losses import lm_loss_from_logits
from jaxvlm.training.trainer import BatchFactory
from jaxvlm.training.vlm import merge_size

HEADS = ("latency_encoder", "scheduler", "controller")
UNIT_HEAD = "unit_scheduler"  # head granularity only
TRAINABLE = ("lora", "full", "heads")


def sample_budget(rng: np.random.Generator, num_layers: int, prefix: int,
                  min_budget: float) -> float:
  """A layer count ``c`` uniform over ``prefix .. L``, then ``b`` uniform in ``[c / L, (c + 1) /
  L)`` (``[min_budget, (prefix + 1) / L)`` for ``c = prefix``, ``b = 1`` for ``c = L``)."""
  c = int(rng.integers(prefix, num_layers + 1))
  if c == num_layers:
    return 1.0
  low = min_budget if c == prefix else c / num_layers
  return float(rng.uniform(low, (c + 1) / num_layers - 1e-3))


def instruct_rows(processor, path: str, image_folder: str, limit: int | None = None) -> dict:
  """Trainer rows of a LLaVA instruction file: one row per assistant turn, the loss on it."""
  examples = llava_instruct.training_examples(
      llava_instruct.read_llava_instruct(path, image_folder, limit))
  batch = vlm_inputs.encode(processor, [c for c, _ in examples], answers=[a for _, a in examples])
  return vlm_inputs.as_rows(batch, merge_size(processor))


def batch_factory(config, processor, model) -> BatchFactory:
  """``batch_fn`` for :func:`jaxvlm.training.vlm.train_vlm` (``model``: an AdaLlava): the rows of
  ``data.instruct_json`` / ``data.instruct_images`` with the latency token, a latency budget
  (:func:`sample_budget`) and a token budget (uniform in ``[min_token_budget, 1]``) per batch."""
  d, ada = config.data, config.model.adallava
  base = sft.batch_factory(instruct_rows(processor, d.instruct_json, d.instruct_images,
                                         d.instruct_limit or None), config.train.batch_size)
  lat, img = ada.latency_token_id, model.image_token_id

  def factory(seed: int, start_step: int):
    for step, batch in enumerate(base(seed, start_step), start_step):
      ins = mm.insert_token(batch["input_ids"], batch["attention_mask"], lat, after_id=img,
                            extra={"loss_mask": batch["loss_mask"]})
      rng = np.random.default_rng([seed, step])
      b = sample_budget(rng, model.num_layers, model.config.prefix_layers, ada.min_budget)
      k = float(rng.uniform(ada.min_token_budget, 1.0))
      rows = len(ins.input_ids)
      yield {**batch, "input_ids": ins.input_ids, "attention_mask": ins.attention_mask,
             "loss_mask": ins.extra["loss_mask"], "budget": np.full((rows,), b, np.float32),
             "token_budget": np.full((rows,), k, np.float32)}
  return factory


def key_gated_attention(gate: jax.Array):
  """``attention_fn`` whose softmax weights are multiplied by ``gate [B, S]`` per key and
  re-normalised (DynamicViT's attention masking). With a ``{0, 1}`` straight-through gate the
  forward equals dropping the gated-off keys, and the gate of a dropped key still gets a gradient
  (what keeping it would change), which plain masking cannot give."""
  def fn(q, k, v, mask, layer_idx):
    del layer_idx
    groups = q.shape[2] // k.shape[2]
    k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    logits = logits / np.sqrt(q.shape[-1])
    if mask is None:
      mask = jnp.tril(jnp.ones(logits.shape[-2:], bool))
    p = jax.nn.softmax(jnp.where(mask, logits, -1e30), axis=-1)
    p = p * jnp.where(mask, gate[:, None, None, :].astype(jnp.float32), 0.0)
    p = p / jnp.maximum(p.sum(-1, keepdims=True), 1e-9)
    return jnp.einsum("bhqk,bkhd->bqhd", p.astype(v.dtype), v)
  return fn


def loss_fn(model, batch: dict, rng: jax.Array) -> tuple[jax.Array, dict]:
  """Next-token CE on the answers of a :func:`batch_factory` batch under its latency budget
  (layers) and token budget (visual tokens kept)."""
  k_tokens, k_layers = jax.random.split(rng)
  ids, budget = jnp.asarray(batch["input_ids"]), jnp.asarray(batch["budget"])
  token_budget = jnp.asarray(batch["token_budget"])
  pixels = vlm_inputs.model_kwargs(model.vlm, batch)["pixel_values"]
  feats = model.vlm.get_image_features(pixels)  # [B, N, H]
  latency = model.latency_encoder(budget)
  keep = model.keep_tokens(model.controller(feats, token_budget), token_budget,
                           rng=k_tokens)  # [B, N]
  emb = model.embed_inputs(ids, feats.reshape(-1, feats.shape[-1]), latency)
  is_image = ids == model.image_token_id
  slot = jnp.clip(jnp.cumsum(is_image, axis=1) - 1, 0, keep.shape[1] - 1)
  gate = jnp.where(is_image, jnp.take_along_axis(keep, slot, axis=1), 1.0)  # ST {0, 1} per key
  kept = jnp.asarray(batch["attention_mask"]) * (jax.lax.stop_gradient(gate) > 0.5)
  positions = jnp.maximum(jnp.cumsum(kept, axis=1) - 1, 0)  # renumbered as at inference
  out = model(inputs_embeds=emb, attention_mask=batch["attention_mask"], position_ids=positions,
              budget=budget, latency_index=model.latency_index(ids), rng=k_layers, train=True,
              attention_fn=key_gated_attention(gate))
  loss, aux = lm_loss_from_logits(out.logits, batch)
  return loss, {**aux, "budget": budget.mean(), "token_budget": token_budget.mean(),
                "visual_kept": keep.sum(1).mean()}


def trainable_filter(mode: str):
  """Parameters the fine-tune updates: ``lora`` = LoRA adapters + the AdaLLaVA heads (with the
  unit scheduler of head granularity), ``full`` = every parameter, ``heads`` = those heads only."""
  heads = nnx.All(nnx.Param, nnx.Any(*(nnx.PathContains(h) for h in HEADS + (UNIT_HEAD,))))
  if mode == "lora":
    return nnx.Any(nnx.LoRAParam, heads)
  if mode == "full":
    return nnx.Param
  if mode == "heads":
    return heads
  raise ConfigError("model.adallava.trainable", mode, f"one of {TRAINABLE}")


def check_checkpoint(directory: str, field: str = "adallava.checkpoint",
                     granularity: str = "layer") -> None:
  """Raises ``CheckpointError`` naming ``field`` when the latest Trainer checkpoint in
  ``directory`` (a run folder or its ``checkpoints/``) lacks a scheduler, controller or latency
  encoder (e.g. a base VLM checkpoint given to a budget run), or, for ``granularity="head"``,
  the unit scheduler (a layer-granularity checkpoint given to a head run)."""
  ckpt = os.path.join(os.path.abspath(directory), "checkpoints")
  ckpt = ckpt if os.path.isdir(ckpt) else os.path.abspath(directory)
  if not os.path.isdir(ckpt):
    raise CheckpointError(f"{field}: got {directory!r}, expected a Trainer run folder")
  step = Checkpointer(ckpt, async_save=False).latest_step()
  if step is None:
    raise CheckpointError(f"{field}: got {directory!r}, expected a folder with a checkpoint")
  tree = ocp.StandardCheckpointer().metadata(os.path.join(ckpt, str(step), "state")).item_metadata
  names = set(dict(tree)["params"])
  required = HEADS + ((UNIT_HEAD,) if granularity == "head" else ())
  missing = [h for h in required if not any(n.startswith(h + ".") for n in names)]
  if missing:
    raise CheckpointError(f"{field}: got {directory!r} (step {step}) without the AdaLLaVA "
                          f"{', '.join(missing)} parameters, expected an AdaLLaVA checkpoint "
                          f"of granularity {granularity!r} (a budget run needs its scheduler "
                          "heads)")
