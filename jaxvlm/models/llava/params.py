"""Weight-name rules of the vision-language checkpoints (legacy and transformers-v5 prefixes)."""

from __future__ import annotations

from typing import Sequence

from jaxvlm.models.clip.params import module_rules, prefixed
from jaxvlm.models.llama import params as llama_params
from jaxvlm.models.weights import Rule

# transformers >= 4.52 names (``InternVLModel``/``LlavaModel`` base) vs. the legacy names that
# ``save_pretrained`` still writes and most hub checkpoints use.
_V5_PREFIXES = (("language_model.model.", "model.language_model."),
                ("language_model.lm_head.", "lm_head."),
                ("vision_tower.", "model.vision_tower."),
                ("multi_modal_projector.", "model.multi_modal_projector."))


def with_v5_names(rules: Sequence[Rule]) -> list[Rule]:
  """``rules`` followed by copies that read the new (``model.``-prefixed) names."""
  extra = []
  for r in rules:
    for old, new in _V5_PREFIXES:
      if r.hf.startswith(old):
        extra.append(Rule(new + r.hf[len(old):], r.ours, r.split, r.merge))
  return list(rules) + extra


def language_model_rules(lm_rules: Sequence[Rule] = llama_params.RULES) -> list[Rule]:
  """The LM under ``language_model.`` (HF names ``language_model.model.*``, ``.lm_head``)."""
  return prefixed(lm_rules, "language_model.", "language_model.")


PROJECTOR_RULES = module_rules("multi_modal_projector.", "multi_modal_projector.",
                               [("layer_norm", "layer_norm"), ("linear_1", "linear_1"),
                                ("linear_2", "linear_2")])
