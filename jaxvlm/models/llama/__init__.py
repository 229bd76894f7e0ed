"""LLaMA / Qwen2 decoder family."""

from jaxvlm.models.llama.modeling import LlamaConfig, LlamaForCausalLM, LlamaModel, ModelOutput

__all__ = ["LlamaConfig", "LlamaForCausalLM", "LlamaModel", "ModelOutput"]
