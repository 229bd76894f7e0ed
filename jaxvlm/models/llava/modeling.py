"""Vision-language model: ViT tower -> feature selection -> (pixel shuffle) -> MLP projector ->
visual tokens merged at the image placeholders of a :class:`LlamaForCausalLM`.

One module serves LLaVA-1.5 (CLIP penultimate layer, CLS dropped, ``linear_1 -> GELU ->
linear_2``) and InternVL (InternViT last layer, CLS dropped, pixel shuffle 0.5, ``LayerNorm ->
linear_1 -> GELU -> linear_2``), configured by :class:`VLMConfig`. The merge goes through
:func:`jaxvlm.models.multimodal.merge_visual`; pruned prompts pass ``image_features`` (the kept
rows, :func:`~jaxvlm.models.multimodal.gather_kept_features`) instead of ``pixel_values``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvlm.errors import ConfigError, ShapeError
from jaxvlm.layers.attention import KVCache
from jaxvlm.layers.linear import LayerNorm, Linear
from jaxvlm.models.clip.modeling import VisionConfig, VisionTransformer, activation
from jaxvlm.models.llama.modeling import LlamaConfig, LlamaForCausalLM, ModelOutput, as_dtype
from jaxvlm.models.multimodal import merge_visual

_SHARED = ("dtype", "param_dtype", "attention_impl")


def split_overrides(overrides: Mapping[str, Any]) -> tuple[dict, dict]:
  """Registry overrides -> (those for both towers: dtypes/attention, the VLM-level rest)."""
  shared = {k: v for k, v in overrides.items() if k in _SHARED}
  return shared, {k: v for k, v in overrides.items() if k not in _SHARED}


@dataclasses.dataclass(frozen=True)
class VLMConfig:
  """A ViT tower, a projector and a LLaMA-family LM, with the feature-selection switches."""

  vision: VisionConfig
  text: LlamaConfig
  image_token_id: int | None
  vision_feature_layer: int = -2
  vision_final_norm: bool = False  # InternVL: layer -1 means last_hidden_state (post norm)
  drop_cls: bool = True  # vision_feature_select_strategy "default"
  downsample_ratio: float = 1.0  # pixel shuffle scale (0.5 for InternVL)
  projector_norm: bool = False
  projector_act: str = "gelu"
  projector_bias: bool = True
  model_type: str = "llava"
  hf_json: str = "{}"

  def __post_init__(self):
    activation(self.projector_act)
    if self.downsample_ratio not in (1.0, 0.5):
      raise ConfigError("downsample_ratio", self.downsample_ratio, "1.0 or 0.5")

  @property
  def scale(self) -> int:
    return round(1 / self.downsample_ratio)

  @property
  def tokens_per_image(self) -> int:
    g = self.vision.grid
    return (g * g + (0 if self.drop_cls else 1)) // (self.scale ** 2)

  def to_hf(self) -> dict[str, Any]:
    return json.loads(self.hf_json)


def pixel_shuffle(x: jax.Array, scale: float) -> jax.Array:
  """InternVL's pixel shuffle (``ps_version`` v2): ``[B, W, H, C] -> [B, W*s, H*s, C/s^2]``."""
  b, w, h, c = x.shape
  if (h * scale) % 1 or (w * scale) % 1:
    raise ShapeError("vision feature grid", (w, h), f"sides divisible by {round(1 / scale)}")
  x = x.reshape(b, w, int(h * scale), int(c / scale)).transpose(0, 2, 1, 3)
  x = x.reshape(b, int(h * scale), int(w * scale), int(c / (scale * scale)))
  return x.transpose(0, 2, 1, 3)


class Projector(nnx.Module):
  """``[LayerNorm ->] linear_1 -> act -> linear_2``."""

  def __init__(self, cfg: VLMConfig, rngs: nnx.Rngs):
    dt, pdt = as_dtype(cfg.text.dtype), as_dtype(cfg.text.param_dtype)
    d_in, d = cfg.vision.hidden_size * cfg.scale ** 2, cfg.text.hidden_size
    if cfg.projector_norm:
      self.layer_norm = LayerNorm(d_in, eps=1e-5, dtype=dt, param_dtype=pdt)
    self.linear_1 = Linear(d_in, d, use_bias=cfg.projector_bias, logical_axes=(None, "embed"),
                           dtype=dt, param_dtype=pdt, rngs=rngs)
    self.linear_2 = Linear(d, d, use_bias=cfg.projector_bias, logical_axes=("mlp", "embed"),
                           dtype=dt, param_dtype=pdt, rngs=rngs)
    self.act = activation(cfg.projector_act)
    self.norm = cfg.projector_norm

  def __call__(self, x):
    if self.norm:
      x = self.layer_norm(x)
    return self.linear_2(self.act(self.linear_1(x)))


class VisionLanguageModel(nnx.Module):
  """``vision_tower`` + ``multi_modal_projector`` + ``language_model`` (a LlamaForCausalLM)."""

  def __init__(self, config: VLMConfig, rngs: nnx.Rngs):
    self.config = config
    self.vision_tower = VisionTransformer(config.vision, rngs)
    self.multi_modal_projector = Projector(config, rngs)
    self.language_model = LlamaForCausalLM(config.text, rngs)

  def get_image_features(self, pixel_values) -> jax.Array:
    """``[num_images (tiles), C, H, W]`` -> projected visual tokens ``[num_images, T, H_text]``."""
    return self.multi_modal_projector(self.vision_features(pixel_values))

  def vision_features(self, pixel_values) -> jax.Array:
    """The tower's selected (CLS-dropped, pixel-shuffled) features, before the projector
    (SGL shares them between two models whose towers are the same)."""
    cfg = self.config
    x = self.vision_tower.hidden_state(pixel_values, cfg.vision_feature_layer,
                                       final_norm=cfg.vision_final_norm)
    if cfg.drop_cls:
      x = x[:, 1:]
    if cfg.scale != 1:
      n, t, d = x.shape
      side = round(t ** 0.5)
      x = pixel_shuffle(x.reshape(n, side, side, d), cfg.downsample_ratio).reshape(n, -1, d * 4)
    return x

  def embed_inputs(self, input_ids, pixel_values=None, image_features=None) -> jax.Array:
    """Token embeddings with the visual tokens at the placeholders (count mismatch -> error)."""
    input_ids = jnp.asarray(input_ids)
    embeds = self.language_model.model.embed_tokens(input_ids)
    if pixel_values is None and image_features is None:
      return embeds
    if self.config.image_token_id is None:
      raise ConfigError("image_token_id", None, "the id of the image placeholder token "
                        "(pass image_token_id=... to load_pretrained)")
    if image_features is None:
      image_features = self.get_image_features(pixel_values)
    feats = jnp.asarray(image_features)
    feats = feats.reshape(-1, feats.shape[-1])
    return merge_visual(embeds, input_ids, feats, self.config.image_token_id)

  def prefill_inputs(self, input_ids, attention_mask, *, pixel_values=None, image_features=None,
                     position_ids=None, prune=None):
    """For :func:`jaxvlm.generation.autoregressive.generate`: merged embeddings for the prefill
    (``prune``: a :class:`~jaxvlm.models.multimodal.LayerPrune` applied inside the LM)."""
    call = dict(inputs_embeds=self.embed_inputs(input_ids, pixel_values, image_features),
                attention_mask=attention_mask)
    if position_ids is not None:
      call["position_ids"] = position_ids
    if prune is not None:
      call["prune"] = prune
    return call, {}

  def init_cache(self, batch: int, max_len: int, dtype=None) -> KVCache:
    return self.language_model.init_cache(batch, max_len, dtype)

  def __call__(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None,
               cache: KVCache | None = None, *, pixel_values=None, image_features=None,
               **lm_kwargs) -> ModelOutput:
    """LM forward on the merged sequence. ``pixel_values`` (all images' tiles, in placeholder order)
    or ``image_features`` (``[T, H_text]`` projected tokens) fill the image placeholders of
    ``input_ids``; ``lm_kwargs`` go to :class:`LlamaForCausalLM` (hidden states, attentions,
    ``attention_fn``, ``logits_to_keep``)."""
    if inputs_embeds is None and (pixel_values is not None or image_features is not None):
      inputs_embeds = self.embed_inputs(input_ids, pixel_values, image_features)
      input_ids = None
    return self.language_model(input_ids, attention_mask, position_ids, inputs_embeds, cache,
                               **lm_kwargs)
