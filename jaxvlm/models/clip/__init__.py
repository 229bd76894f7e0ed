"""CLIP: the vision tower (``clip_vision_model``; LLaVA's vision encoder) and the dual encoder
(``clip``: text + vision towers, projections, logit scale)."""

from jaxvlm.models.clip import params
from jaxvlm.models.clip.dual import CLIPConfig, CLIPModel, clip_pixels
from jaxvlm.models.clip.modeling import VisionConfig, VisionTransformer
from jaxvlm.models.registry import Family, register_family

# transformers v5 saves ``CLIPVisionModel`` flat; older checkpoints nest it under ``vision_model.``.
register_family(Family("clip_vision_model", VisionConfig.from_clip_hf, VisionTransformer,
                       (*params.RULES, *params.prefixed(params.RULES, "vision_model.", "")),
                       params.IGNORE))
register_family(Family("clip", CLIPConfig.from_hf, CLIPModel, params.DUAL_RULES, params.IGNORE))

__all__ = ["CLIPConfig", "CLIPModel", "VisionConfig", "VisionTransformer", "clip_pixels"]
