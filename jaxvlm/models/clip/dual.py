"""CLIP dual encoder (HF ``CLIPModel``, ``model_type`` ``clip``) in flax.nnx.

Text tower: token + learned absolute position embeddings, the shared pre-norm blocks of
:mod:`.modeling` under a causal + padding mask, a final LayerNorm, pooled at the first
``eos_token_id`` (or at the highest id for legacy configs whose ``eos_token_id`` is 2, as HF does).
Vision tower: :class:`~jaxvlm.models.clip.modeling.VisionTransformer`, pooled CLS +
``post_layernorm``. ``get_text_features`` / ``get_image_features`` return the projected, not
normalised, pooled states (as ``transformers``); ``__call__`` gives the scaled cosine logits.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvlm.errors import ShapeError
from jaxvlm.layers.attention import make_mask
from jaxvlm.layers.linear import Embed, LayerNorm, Linear
from jaxvlm.models.clip.modeling import VisionConfig, VisionLayer, VisionTransformer
from jaxvlm.models.llama.modeling import as_dtype

_TEXT_DEFAULTS = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048,
                      num_hidden_layers=12, num_attention_heads=8, max_position_embeddings=77,
                      hidden_act="quick_gelu", layer_norm_eps=1e-5, eos_token_id=49407)


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
  """Both towers (the text tower's blocks are described by a :class:`VisionConfig`), the text
  vocabulary / positions / EOS id, the shared projection width and the logit scale init."""

  text: VisionConfig
  vision: VisionConfig
  vocab_size: int
  max_position_embeddings: int
  eos_token_id: int
  projection_dim: int = 512
  logit_scale_init_value: float = 2.6592
  model_type: str = "clip"
  hf_json: str = "{}"

  @classmethod
  def from_hf(cls, hf: Mapping[str, Any], **overrides) -> "CLIPConfig":
    shared = {k: overrides.pop(k) for k in ("dtype", "param_dtype", "attention_impl")
              if k in overrides}
    t = {**_TEXT_DEFAULTS, **(hf.get("text_config") or {})}
    text = VisionConfig(hidden_size=t["hidden_size"], intermediate_size=t["intermediate_size"],
                        num_hidden_layers=t["num_hidden_layers"],
                        num_attention_heads=t["num_attention_heads"], image_size=1, patch_size=1,
                        layer_norm_eps=t["layer_norm_eps"], hidden_act=t["hidden_act"],
                        post_norm=None, model_type="clip_text_model", **shared)
    vision = VisionConfig.from_clip_hf({"hidden_size": 768, "intermediate_size": 3072,
                                        "num_hidden_layers": 12, "num_attention_heads": 12,
                                        **(hf.get("vision_config") or {})}, **shared)
    return cls(text, vision, t["vocab_size"], t["max_position_embeddings"], t["eos_token_id"],
               hf.get("projection_dim", 512), hf.get("logit_scale_init_value", 2.6592),
               hf_json=json.dumps(dict(hf)), **overrides)

  def to_hf(self) -> dict[str, Any]:
    return json.loads(self.hf_json)


class TextTransformer(nnx.Module):
  """HF ``CLIPTextModel``: ``__call__`` -> (``last_hidden_state``, pooled ``[B, D]``, hidden
  states of the embeddings and every block, before the final norm, as HF ``hidden_states``)."""

  def __init__(self, cfg: CLIPConfig, rngs: nnx.Rngs):
    t = cfg.text
    dt, pdt = as_dtype(t.dtype), as_dtype(t.param_dtype)
    self.eos_token_id = cfg.eos_token_id
    self.token_embedding = Embed(cfg.vocab_size, t.hidden_size, dtype=dt, param_dtype=pdt,
                                 rngs=rngs)
    self.position_embedding = nnx.Param(nnx.initializers.normal(0.01)(
        rngs.params(), (cfg.max_position_embeddings, t.hidden_size), pdt),
        logical_axes=(None, "embed"))
    self.layers = nnx.List([VisionLayer(t, rngs) for _ in range(t.num_hidden_layers)])
    self.final_layer_norm = LayerNorm(t.hidden_size, eps=t.layer_norm_eps, dtype=dt,
                                      param_dtype=pdt)

  def __call__(self, input_ids, attention_mask=None):
    ids = jnp.asarray(input_ids)
    b, s = ids.shape
    if s > self.position_embedding.shape[0]:
      raise ShapeError("input_ids", ids.shape,
                       f"at most max_position_embeddings={self.position_embedding.shape[0]} tokens")
    valid = None if attention_mask is None else jnp.asarray(attention_mask).astype(bool)
    mask = make_mask(jnp.arange(s), jnp.arange(s), valid, causal=True)
    x = self.token_embedding(ids) + self.position_embedding[...][:s].astype(
        self.token_embedding.dtype)
    hidden = [x]
    for block in self.layers:
      x = block(x, mask)
      hidden.append(x)
    x = self.final_layer_norm(x)
    if self.eos_token_id == 2:  # legacy configs: the EOT token has the highest id
      where = jnp.argmax(ids, axis=-1)
    else:
      where = jnp.argmax(ids == self.eos_token_id, axis=-1)
    return x, x[jnp.arange(b), where], hidden


class CLIPModel(nnx.Module):
  """``text_model``, ``vision_model``, ``text_projection``, ``visual_projection``, ``logit_scale``."""

  def __init__(self, cfg: CLIPConfig, rngs: nnx.Rngs):
    self.config = cfg
    dt, pdt = as_dtype(cfg.text.dtype), as_dtype(cfg.text.param_dtype)
    self.text_model = TextTransformer(cfg, rngs)
    self.vision_model = VisionTransformer(cfg.vision, rngs)
    proj = lambda d: Linear(d, cfg.projection_dim, logical_axes=("embed", None), dtype=dt,
                            param_dtype=pdt, rngs=rngs)
    self.text_projection = proj(cfg.text.hidden_size)
    self.visual_projection = proj(cfg.vision.hidden_size)
    self.logit_scale = nnx.Param(jnp.asarray(cfg.logit_scale_init_value, pdt), logical_axes=())

  def get_text_features(self, input_ids, attention_mask=None) -> jax.Array:
    """Projected pooled text states ``[B, projection_dim]`` (not normalised)."""
    return self.text_projection(self.text_model(input_ids, attention_mask)[1])

  def get_image_features(self, pixel_values) -> jax.Array:
    """Projected pooled image states ``[B, projection_dim]`` (not normalised)."""
    return self.visual_projection(self.vision_model.pooled(jnp.asarray(pixel_values)))

  def __call__(self, input_ids, pixel_values, attention_mask=None) -> dict[str, jax.Array]:
    """``logits_per_image [B_img, B_text]`` = exp(logit_scale) * cosine, and both embeddings."""
    normed = lambda e: e / jnp.linalg.norm(e, axis=-1, keepdims=True)
    image = normed(self.get_image_features(pixel_values))
    text = normed(self.get_text_features(input_ids, attention_mask))
    logits = jnp.exp(self.logit_scale[...]) * image @ text.T
    return {"logits_per_image": logits, "logits_per_text": logits.T, "image_embeds": image,
            "text_embeds": text}


def clip_pixels(images: np.ndarray, size: int) -> np.ndarray:
  """uint8 ``[N, H, W, 3]`` -> CLIP-normalised ``[N, 3, size, size]`` float32 (bicubic resize of
  the whole image, OpenAI CLIP mean / std); for the embedded synthetic images without a processor."""
  from PIL import Image
  mean = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
  std = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
  out = [np.asarray(Image.fromarray(np.asarray(im, np.uint8)).resize((size, size),
                                                                     Image.BICUBIC), np.float32)
         for im in images]
  return ((np.stack(out) / 255.0 - mean) / std).transpose(0, 3, 1, 2)
