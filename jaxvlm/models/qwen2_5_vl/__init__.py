"""Qwen2.5-VL: vision tower, M-RoPE decoder, registration of ``model_type`` ``qwen2_5_vl``."""

from jaxvlm.models.qwen2_5_vl import params
from jaxvlm.models.qwen2_5_vl.modeling import (Qwen2_5_VLConfig,
                                               Qwen2_5_VLForConditionalGeneration, mrope_cos_sin)
from jaxvlm.models.qwen2_5_vl.vision import VisionConfig, VisionTransformer
from jaxvlm.models.registry import Family, register_family

register_family(Family("qwen2_5_vl", Qwen2_5_VLConfig.from_hf, Qwen2_5_VLForConditionalGeneration,
                       params.RULES, params.IGNORE))

__all__ = ["Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration", "VisionConfig",
           "VisionTransformer", "mrope_cos_sin"]
