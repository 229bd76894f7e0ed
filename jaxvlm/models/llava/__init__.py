"""LLaVA-1.5 (``llava``): CLIP tower (penultimate layer, CLS dropped), 2-layer MLP projector,
LLaMA LM; the shared :class:`VisionLanguageModel`."""

from __future__ import annotations

import json
from typing import Any, Mapping

from jaxvlm.errors import ConfigError
from jaxvlm.models.clip import params as clip_params
from jaxvlm.models.clip.modeling import VisionConfig
from jaxvlm.models.clip.params import prefixed
from jaxvlm.models.llama.modeling import LlamaConfig
from jaxvlm.models.llava.modeling import VisionLanguageModel, VLMConfig, split_overrides
from jaxvlm.models.llava.params import PROJECTOR_RULES, language_model_rules, with_v5_names
from jaxvlm.models.registry import Family, register_family


def text_config(hf: Mapping[str, Any], text: Mapping[str, Any], **shared) -> LlamaConfig:
  """The LM config; a top-level ``tie_word_embeddings`` (transformers v5 VLMs) wins."""
  text = dict(text)
  if "tie_word_embeddings" in hf:
    text["tie_word_embeddings"] = hf["tie_word_embeddings"]
  return LlamaConfig.from_hf(text, **shared)


def config_from_hf(hf: Mapping[str, Any], **overrides) -> VLMConfig:
  """``llava`` config.json dict -> :class:`VLMConfig`."""
  shared, rest = split_overrides(overrides)
  layer = hf.get("vision_feature_layer", -2)
  if not isinstance(layer, int):
    raise ConfigError("vision_feature_layer", layer, "a single layer index")
  strategy = hf.get("vision_feature_select_strategy", "default")
  if strategy not in ("default", "full"):
    raise ConfigError("vision_feature_select_strategy", strategy, "'default' or 'full'")
  vision = VisionConfig.from_clip_hf(hf["vision_config"], **shared)
  kw = dict(vision=vision, text=text_config(hf, hf["text_config"], **shared),
            image_token_id=hf.get("image_token_index", hf.get("image_token_id")),
            vision_feature_layer=layer, drop_cls=strategy == "default",
            projector_act=hf.get("projector_hidden_act", "gelu"),
            projector_bias=hf.get("multimodal_projector_bias", True), model_type="llava",
            hf_json=json.dumps(dict(hf)))
  return VLMConfig(**(kw | rest))


# HF ``CLIPVisionModel`` checkpoints nest the tower under ``vision_model.``; v5 saves it flat.
RULES = with_v5_names([*prefixed(clip_params.RULES, "vision_tower.", "vision_tower."),
                       *prefixed(clip_params.RULES, "vision_tower.vision_model.", "vision_tower."),
                       *PROJECTOR_RULES, *language_model_rules()])
IGNORE = (*clip_params.IGNORE, r".*rotary_emb\.inv_freq$")

register_family(Family("llava", config_from_hf, VisionLanguageModel, RULES, IGNORE))

__all__ = ["VLMConfig", "VisionLanguageModel", "config_from_hf", "text_config"]
