"""InternViT (InternVL's vision encoder): configs and weight rules for both checkpoint layouts."""

from jaxvlm.models.intern_vit.modeling import from_internvl_vision_hf, from_intern_vit_hf
from jaxvlm.models.intern_vit.params import HF_RULES, ORIGINAL_RULES

__all__ = ["HF_RULES", "ORIGINAL_RULES", "from_internvl_vision_hf", "from_intern_vit_hf"]
