"""InternViT configs: the shared :class:`VisionTransformer` with layer scale (``ls1``/``ls2``),
optional q/k RMSNorm (InternViT-6B) and LayerNorm or RMSNorm, from either config layout."""

from __future__ import annotations

import json
from typing import Any, Mapping

from jaxvlm.models.clip.modeling import VisionConfig, _pair_first


def _common(hf: Mapping[str, Any]) -> dict[str, Any]:
  return dict(hidden_size=hf["hidden_size"], intermediate_size=hf["intermediate_size"],
              num_hidden_layers=hf["num_hidden_layers"],
              num_attention_heads=hf["num_attention_heads"],
              image_size=_pair_first(hf.get("image_size", 448)),
              patch_size=_pair_first(hf.get("patch_size", 14)),
              num_channels=hf.get("num_channels", 3), layer_norm_eps=hf.get("layer_norm_eps", 1e-6),
              norm_type=hf.get("norm_type", "layer_norm"), hidden_act=hf.get("hidden_act", "gelu"),
              patch_bias=True, pre_norm=False, layer_scale=True, hf_json=json.dumps(dict(hf)))


def from_intern_vit_hf(hf: Mapping[str, Any], **overrides) -> VisionConfig:
  """The ``vision_config`` of an original ``internvl_chat`` checkpoint (``InternVisionModel``)."""
  kw = _common(hf) | dict(qkv_bias=hf.get("qkv_bias", True),
                          qk_norm=hf.get("qk_normalization", False), post_norm=None,
                          model_type="intern_vit_6b")
  return VisionConfig(**(kw | overrides))


def from_internvl_vision_hf(hf: Mapping[str, Any], **overrides) -> VisionConfig:
  """The ``vision_config`` of a HF-native ``internvl`` checkpoint (``InternVLVisionModel``)."""
  kw = _common(hf) | dict(qkv_bias=hf.get("attention_bias", False),
                          qk_norm=hf.get("use_qk_norm", False),
                          post_norm=None if hf.get("use_mean_pooling", True) else "sequence",
                          model_type="internvl_vision")
  return VisionConfig(**(kw | overrides))
