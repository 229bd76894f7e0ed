"""Dream (``Dream-org/Dream-v0-*-7B``): the Qwen2 layout with bidirectional attention.

The checkpoint's names are Qwen2's (``model.layers.{i}.self_attn.q_proj`` ... ``lm_head``), so the
``qwen2`` rules load it; ``config.json`` has ``model_type: "Dream"`` and a ``mask_token_id``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from jaxvlm.models.llama import params
from jaxvlm.models.llama.modeling import LlamaConfig, LlamaForCausalLM
from jaxvlm.models.registry import Family, register_family

DEFAULT_MASK_ID = 151666


@dataclasses.dataclass(frozen=True)
class DreamConfig(LlamaConfig):
  """``LlamaConfig`` (Qwen2 switches, bidirectional) plus the mask token id."""

  mask_token_id: int = DEFAULT_MASK_ID

  @classmethod
  def from_dream(cls, hf: Mapping[str, Any], **overrides) -> "DreamConfig":
    base = LlamaConfig.from_hf({**hf, "model_type": "qwen2"})
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(LlamaConfig)}
    fields.update(causal=False, model_type="Dream",
                  mask_token_id=hf.get("mask_token_id", DEFAULT_MASK_ID))
    fields.update(overrides)
    return cls(**fields)

  def to_hf(self) -> dict[str, Any]:
    qwen = dataclasses.replace(self, model_type="qwen2")
    out = LlamaConfig.to_hf(qwen)
    out.update(model_type="Dream", architectures=["DreamModel"], mask_token_id=self.mask_token_id)
    return out


for _model_type in ("Dream", "dream"):
  register_family(Family(_model_type, DreamConfig.from_dream, LlamaForCausalLM, params.RULES,
                         params.IGNORE))
