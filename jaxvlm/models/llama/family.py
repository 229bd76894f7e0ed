"""Registers the ``llama`` and ``qwen2`` model types."""

from jaxvlm.models.llama import params
from jaxvlm.models.llama.modeling import LlamaConfig, LlamaForCausalLM
from jaxvlm.models.registry import Family, register_family

for _model_type in ("llama", "qwen2"):
  register_family(Family(_model_type, LlamaConfig.from_hf, LlamaForCausalLM, params.RULES,
                         params.IGNORE))
