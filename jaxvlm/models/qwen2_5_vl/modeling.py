"""Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration``) in flax.nnx.

The vision tower (:mod:`.vision`) feeds a Qwen2 decoder (:class:`LlamaForCausalLM`, reused as
``language_model``) through the merge contract (:func:`jaxvlm.models.multimodal.merge_visual`).
Positions are M-RoPE: ``[3, B, S]`` (temporal, height, width) ids from :meth:`get_rope_index`
(HF semantics for images), turned into cos/sin tables whose frequency bands follow
``mrope_section`` and passed to the decoder as ``position_embeddings``. Decode steps continue from
``rope_deltas`` (``max position + 1 - prompt length``). Videos are refused.

Eager use: ``model(input_ids, attention_mask, pixel_values=..., image_grid_thw=...)``.
Generation: ``generate(model, ids, mask, n, **model.prepare_inputs(ids, mask, pixel_values,
image_grid_thw))`` (host-side vision encoding and positions, then one jit-compiled decode).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvlm.errors import ConfigError, ShapeError
from jaxvlm.layers.rope import inv_frequencies
from jaxvlm.models.llama.modeling import (LlamaConfig, LlamaForCausalLM, ModelOutput,
                                          default_position_ids)
from jaxvlm.models.multimodal import merge_visual
from jaxvlm.models.qwen2_5_vl.vision import VisionConfig, VisionTransformer

_SHARED_OVERRIDES = ("dtype", "param_dtype", "attention_impl")


@dataclasses.dataclass(frozen=True)
class Qwen2_5_VLConfig:
  """Text decoder + vision tower + the special token ids and the M-RoPE split."""

  text: LlamaConfig
  vision: VisionConfig
  mrope_section: tuple[int, ...]
  image_token_id: int = 151655
  video_token_id: int = 151656
  vision_start_token_id: int = 151652
  vision_end_token_id: int = 151653
  model_type: str = "qwen2_5_vl"

  def __post_init__(self):
    if 2 * sum(self.mrope_section) != self.text.head_dim:
      raise ConfigError("rope_parameters.mrope_section", self.mrope_section,
                        f"sections summing to head_dim / 2 = {self.text.head_dim // 2}")

  @classmethod
  def from_hf(cls, hf: Mapping[str, Any], **overrides) -> "Qwen2_5_VLConfig":
    """Reads the v5 (``text_config``/``vision_config``) or the flat v4 config layout."""
    text = dict(hf.get("text_config") or hf)
    rope = dict(text.get("rope_parameters") or text.get("rope_scaling") or {})
    section = tuple(rope.get("mrope_section", (16, 24, 24)))
    theta = rope.get("rope_theta", text.get("rope_theta", 1000000.0))
    text.update(model_type="qwen2_5_vl_text",
                rope_parameters={"rope_type": "default", "rope_theta": theta}, rope_scaling=None)
    text.setdefault("tie_word_embeddings", hf.get("tie_word_embeddings", False))
    shared = {k: overrides.pop(k) for k in _SHARED_OVERRIDES if k in overrides}
    ids = {k: hf[k] for k in ("image_token_id", "video_token_id", "vision_start_token_id",
                              "vision_end_token_id") if k in hf}
    return cls(LlamaConfig.from_hf(text, **shared), VisionConfig.from_hf(hf["vision_config"],
                                                                         **shared),
               section, **ids, **overrides)

  def to_hf(self) -> dict[str, Any]:
    text = self.text.to_hf()
    text.pop("architectures", None)
    text.update(model_type="qwen2_5_vl_text", rope_scaling=None, rope_parameters={
        "rope_type": "default", "rope_theta": self.text.rope_theta,
        "mrope_section": list(self.mrope_section)})
    return dict(model_type=self.model_type, architectures=["Qwen2_5_VLForConditionalGeneration"],
                text_config=text, vision_config=self.vision.to_hf(),
                tie_word_embeddings=self.text.tie_word_embeddings,
                image_token_id=self.image_token_id, video_token_id=self.video_token_id,
                vision_start_token_id=self.vision_start_token_id,
                vision_end_token_id=self.vision_end_token_id)


def mrope_cos_sin(position_ids: jax.Array, inv_freq: np.ndarray, section) -> tuple[jax.Array,
                                                                                    jax.Array]:
  """M-RoPE tables ``[B, S, D]`` from ``position_ids [3, B, S]``: frequency band ``j`` of
  ``mrope_section`` uses axis ``j % 3`` (HF ``recomposition_frequencies``)."""
  axis = np.repeat(np.arange(len(section)) % 3, section)  # [D/2]
  pos = jnp.asarray(position_ids).astype(jnp.float32)[axis]  # [D/2, B, S]
  freqs = jnp.moveaxis(pos, 0, -1) * jnp.asarray(inv_freq)
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def rope_index(input_ids, image_grid_thw, attention_mask=None, *, image_token_id: int,
               video_token_id: int, spatial_merge_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Host-side M-RoPE ids ``[3, B, S]`` and ``rope_deltas [B, 1]`` (HF ``get_rope_index``).

  Text tokens advance all three axes by one; an image of LLM grid ``(t, h, w)`` (after the
  spatial merge) takes ``(start + t_idx, start + h_idx, start + w_idx)`` and the text after it
  resumes at ``start + max(h, w)``. Padding (mask 0) gets position 0. ``image_grid_thw`` lists
  the images of the whole batch in row-major order.
  """
  ids = np.asarray(jax.device_get(input_ids))
  mask = (np.ones_like(ids, bool) if attention_mask is None
          else np.asarray(jax.device_get(attention_mask)).astype(bool))
  if (ids[mask] == video_token_id).any():
    raise ConfigError("input_ids", "video placeholder tokens",
                      "images only (video input is not implemented for qwen2_5_vl)")
  grids = iter(np.zeros((0, 3), int) if image_grid_thw is None
               else np.asarray(image_grid_thw).reshape(-1, 3))
  m = spatial_merge_size
  positions = np.zeros((3,) + ids.shape, np.int32)
  deltas = np.zeros((ids.shape[0], 1), np.int32)
  for b in range(ids.shape[0]):
    row, parts, cur, i = ids[b][mask[b]], [], 0, 0
    while i < len(row):
      if row[i] == image_token_id:
        t, h, w = next(grids)
        tt, hh, ww = np.meshgrid(np.arange(t), np.arange(h // m), np.arange(w // m),
                                 indexing="ij")
        parts.append(np.stack([tt, hh, ww]).reshape(3, -1) + cur)
        cur += max(h, w) // m
        i += parts[-1].shape[1]
      else:
        j = i
        while j < len(row) and row[j] != image_token_id:
          j += 1
        parts.append(np.broadcast_to(np.arange(cur, cur + j - i), (3, j - i)))
        cur, i = cur + j - i, j
    pos = np.concatenate(parts, axis=1) if parts else np.zeros((3, 0), np.int32)
    positions[:, b, mask[b]] = pos
    deltas[b] = (pos.max() + 1 if pos.size else 0) - len(row)
  return positions, deltas


class Qwen2_5_VLForConditionalGeneration(nnx.Module):
  """Vision tower ``visual`` + Qwen2 decoder ``language_model`` (a :class:`LlamaForCausalLM`)."""

  def __init__(self, cfg: Qwen2_5_VLConfig, rngs: nnx.Rngs):
    self.config = cfg
    self.visual = VisionTransformer(cfg.vision, rngs)
    self.language_model = LlamaForCausalLM(cfg.text, rngs)

  # ------------------------------------------------------------------ positions

  def get_rope_index(self, input_ids, image_grid_thw, attention_mask=None):
    """Host-side M-RoPE ids ``[3, B, S]`` and ``rope_deltas [B, 1]`` (see :func:`rope_index`)."""
    cfg = self.config
    return rope_index(input_ids, image_grid_thw, attention_mask,
                      image_token_id=cfg.image_token_id, video_token_id=cfg.video_token_id,
                      spatial_merge_size=cfg.vision.spatial_merge_size)

  def mrope_tables(self, position_ids: jax.Array):
    text = self.config.text
    inv, _ = inv_frequencies(text.head_dim, text.rope_theta)
    return mrope_cos_sin(position_ids, inv, self.config.mrope_section)

  # ------------------------------------------------------------------ inputs

  def encode_images(self, pixel_values, image_grid_thw) -> jax.Array:
    """Visual tokens ``[T, H_lm]`` of all images, in order (jit-compiled per grid)."""
    grid = tuple(tuple(int(v) for v in r) for r in np.asarray(image_grid_thw).reshape(-1, 3))
    return _encode(self.visual, jnp.asarray(pixel_values), grid)

  def prepare_inputs(self, input_ids, attention_mask=None, pixel_values=None,
                     image_grid_thw=None, **prepared) -> dict[str, jax.Array]:
    """Host-side part of a prompt for :func:`jaxvlm.generation.generate`: encoded visual
    features (checked against the placeholders), M-RoPE ids and ``rope_deltas``.

    Already prepared inputs (no ``pixel_values``) pass through unchanged.
    """
    if pixel_values is None:
      return prepared
    features = self.encode_images(pixel_values, image_grid_thw)
    n = int(np.sum(np.asarray(input_ids) == self.config.image_token_id))
    if n != features.shape[0]:
      raise ShapeError("visual features", features.shape[0],
                       f"{n} (the number of image placeholder tokens in input_ids)")
    positions, deltas = self.get_rope_index(input_ids, image_grid_thw, attention_mask)
    return {"visual_features": features, "position_ids": jnp.asarray(positions),
            "rope_deltas": jnp.asarray(deltas)}

  def prefill_inputs(self, input_ids, attention_mask, visual_features=None, position_ids=None,
                     rope_deltas=None):
    """Generation hook: ``(prefill call kwargs, decode call kwargs)`` (jit-compatible)."""
    embeds = self.language_model.model.embed_tokens(input_ids)
    if visual_features is not None:
      embeds = merge_visual(embeds, input_ids, visual_features, self.config.image_token_id)
    return ({"inputs_embeds": embeds, "position_ids": position_ids},
            {} if rope_deltas is None else {"rope_deltas": rope_deltas})

  def init_cache(self, batch: int, max_len: int, dtype=None):
    return self.language_model.init_cache(batch, max_len, dtype)

  # ------------------------------------------------------------------ forward

  def __call__(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None,
               cache=None, *, pixel_values=None, image_grid_thw=None, visual_features=None,
               rope_deltas=None, output_hidden_states: bool = False,
               output_attentions: bool = False, attention_fn=None,
               logits_to_keep: int = 0) -> ModelOutput:
    """Forward pass; the arguments are those of :class:`LlamaForCausalLM` plus

    ``pixel_values [N, C*T*P*P]`` + ``image_grid_thw [n_images, 3]`` (encoded here), or
    already encoded ``visual_features [T, H]``; ``position_ids`` ``[3, B, S]`` (or ``[B, S]``,
    broadcast), else computed by :meth:`get_rope_index` when images are given, else text
    positions plus ``rope_deltas [B, 1]`` (decode after a multimodal prefill).
    """
    if inputs_embeds is None:
      inputs_embeds = self.language_model.model.embed_tokens(jnp.asarray(input_ids))
    if pixel_values is not None:
      visual_features = self.visual(jnp.asarray(pixel_values), image_grid_thw)
    if visual_features is not None:
      inputs_embeds = merge_visual(inputs_embeds, input_ids, visual_features,
                                   self.config.image_token_id)
    if position_ids is None and image_grid_thw is not None:
      position_ids, _ = self.get_rope_index(input_ids, image_grid_thw, attention_mask)
    if position_ids is None:
      b, s = inputs_embeds.shape[:2]
      valid = (jnp.ones((b, s), bool) if attention_mask is None
               else jnp.asarray(attention_mask).astype(bool))
      position_ids = default_position_ids(valid, cache)
      if rope_deltas is not None:
        position_ids = position_ids + jnp.asarray(rope_deltas)
    position_ids = jnp.asarray(position_ids)
    if position_ids.ndim == 2:
      position_ids = jnp.broadcast_to(position_ids, (3,) + position_ids.shape)
    return self.language_model(
        None, attention_mask, None, inputs_embeds, cache,
        position_embeddings=self.mrope_tables(position_ids),
        output_hidden_states=output_hidden_states, output_attentions=output_attentions,
        attention_fn=attention_fn, logits_to_keep=logits_to_keep)


@nnx.jit(static_argnames=("grid",))
def _encode(visual: VisionTransformer, pixel_values: jax.Array, grid) -> jax.Array:
  return visual(pixel_values, grid)
