"""InternVL: HF-native ``internvl`` (``InternVLForConditionalGeneration``) and the original
InternVL2 ``internvl_chat`` layout (``InternVLChatModel``: ``vision_model.*``, ``mlp1.{0,1,3}``,
``language_model.*`` with an InternLM2 or Qwen2 LM), both as the shared
:class:`~jaxvlm.models.llava.modeling.VisionLanguageModel` (pixel shuffle 0.5, LayerNorm projector).

``internvl_chat`` configs do not name the ``<IMG_CONTEXT>`` token id (the tokenizer does): pass
``image_token_id=`` to ``load_pretrained`` (see :func:`jaxvlm.data.images.image_token_id`).
The InternLM2 ``wqkv`` split depends on the head counts, so ``internvl_chat`` / ``internlm2``
register ``rules`` as a function of the config.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from jaxvlm.errors import ConfigError
from jaxvlm.models import intern_vit, internlm2
from jaxvlm.models.clip.params import module_rules, prefixed
from jaxvlm.models.llama import params as llama_params
from jaxvlm.models.llama.modeling import LlamaConfig
from jaxvlm.models.llava import text_config
from jaxvlm.models.llava.modeling import VisionLanguageModel, VLMConfig, split_overrides
from jaxvlm.models.llava.params import PROJECTOR_RULES, language_model_rules, with_v5_names
from jaxvlm.models.registry import Family, register_family


def config_from_hf(hf: Mapping[str, Any], **overrides) -> VLMConfig:
  """HF-native ``internvl`` config.json dict -> :class:`VLMConfig`."""
  shared, rest = split_overrides(overrides)
  layer = hf.get("vision_feature_layer", -1)
  strategy = hf.get("vision_feature_select_strategy", "default")
  if not isinstance(layer, int):
    raise ConfigError("vision_feature_layer", layer, "a single layer index")
  kw = dict(vision=intern_vit.from_internvl_vision_hf(hf["vision_config"], **shared),
            text=text_config(hf, hf["text_config"], **shared),
            image_token_id=hf.get("image_token_id"), vision_feature_layer=layer,
            vision_final_norm=layer == -1, drop_cls=strategy == "default",
            downsample_ratio=hf.get("downsample_ratio", 0.5), projector_norm=True,
            projector_act=hf.get("projector_hidden_act", "gelu"), model_type="internvl",
            hf_json=json.dumps(dict(hf)))
  return VLMConfig(**(kw | rest))


def chat_config_from_hf(hf: Mapping[str, Any], **overrides) -> VLMConfig:
  """Original ``internvl_chat`` config.json dict (``vision_config`` + ``llm_config``)."""
  shared, rest = split_overrides(overrides)
  if hf.get("ps_version", "v2") != "v2":
    raise ConfigError("ps_version", hf["ps_version"], "'v2' (InternVL2 pixel shuffle)")
  llm = dict(hf["llm_config"])
  arch = (llm.get("architectures") or [""])[0]
  if arch == "InternLM2ForCausalLM" or llm.get("model_type") == "internlm2":
    text = internlm2.config_from_hf(llm, **shared)
  elif arch in ("Qwen2ForCausalLM", "LlamaForCausalLM"):
    text = LlamaConfig.from_hf(llm, **shared)
  else:
    raise ConfigError("llm_config.architectures", llm.get("architectures"),
                      "InternLM2ForCausalLM, Qwen2ForCausalLM or LlamaForCausalLM")
  kw = dict(vision=intern_vit.from_intern_vit_hf(hf["vision_config"], **shared), text=text,
            image_token_id=hf.get("img_context_token_id"),
            vision_feature_layer=hf.get("select_layer", -1), drop_cls=True,
            downsample_ratio=hf.get("downsample_ratio", 0.5), projector_norm=True,
            projector_act="gelu", model_type="internvl_chat", hf_json=json.dumps(dict(hf)))
  return VLMConfig(**(kw | rest))


def chat_rules(cfg: VLMConfig) -> list:
  """``InternVLChatModel`` names for ``cfg`` (the InternLM2 ``wqkv`` split needs head counts)."""
  lm = (internlm2.rules_for(cfg.text) if cfg.text.model_type == "internlm2"
        else llama_params.RULES)
  return [*prefixed(intern_vit.ORIGINAL_RULES, "vision_model.", "vision_tower."),
          *module_rules("mlp1.", "multi_modal_projector.",
                        [("0", "layer_norm"), ("1", "linear_1"), ("3", "linear_2")]),
          *prefixed(lm, "language_model.", "language_model.")]


RULES = with_v5_names([*prefixed(intern_vit.HF_RULES, "vision_tower.", "vision_tower."),
                       *PROJECTOR_RULES, *language_model_rules()])
IGNORE = (r".*rotary_emb\.inv_freq$",)

register_family(Family("internvl", config_from_hf, VisionLanguageModel, RULES, IGNORE))
register_family(Family("internvl_chat", chat_config_from_hf, VisionLanguageModel, chat_rules,
                       IGNORE))

__all__ = ["VisionLanguageModel", "chat_config_from_hf", "chat_rules", "config_from_hf"]
