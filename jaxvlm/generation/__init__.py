"""Text generation: autoregressive decoding with a KV cache (and diffusion samplers)."""

from jaxvlm.generation.autoregressive import GenerateOutput, decode, generate, sample_logits

__all__ = ["GenerateOutput", "decode", "generate", "sample_logits"]
