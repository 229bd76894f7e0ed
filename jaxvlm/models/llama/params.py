"""HF ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` tensor names <-> our parameter paths.

Our attribute names mirror ``transformers``, so the mapping is the identity on paths except for
embeddings (``weight`` -> ``embedding``) and Linear kernels (``weight`` -> ``kernel``, transposed).
"""

from jaxvlm.models.weights import Rule

RULES = (
    Rule("model.embed_tokens.weight", "model.embed_tokens.embedding"),
    Rule("{p}.weight", "{p}.kernel"),   # Linear layers (transposed)
    Rule("{p}.weight", "{p}.weight"),   # RMSNorm scales
    Rule("{p}.bias", "{p}.bias"),
)

# Buffers some checkpoints carry that are recomputed from the config.
IGNORE = (r".*rotary_emb\.inv_freq$",)
