"""LLaDA (``GSAI-ML/LLaDA-8B-*``): the bidirectional LLaMA decoder with OLMo-style weight names.

Names follow the official ``modeling_llada.py`` (``LLaDAModelLM.model = LLaDAModel``): blocks hold
``q_proj``/``k_proj``/``v_proj``, ``attn_out``, ``ff_proj`` (the SwiGLU gate: ``act(ff_proj(x)) *
up_proj(x)``), ``up_proj``, ``ff_out`` (down), ``attn_norm``, ``ff_norm``; ``ln_f`` is the final norm
and ``transformer.ff_out`` the output head (absent with ``weight_tying``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from jaxvlm.errors import ConfigError
from jaxvlm.models.llama.modeling import LlamaConfig, LlamaForCausalLM
from jaxvlm.models.registry import Family, register_family
from jaxvlm.models.weights import Rule

DEFAULT_MASK_ID = 126336


@dataclasses.dataclass(frozen=True)
class LLaDAConfig(LlamaConfig):
  """``LlamaConfig`` (bidirectional) plus the mask token id of the diffusion LM."""

  mask_token_id: int = DEFAULT_MASK_ID

  @classmethod
  def from_llada(cls, hf: Mapping[str, Any], **overrides) -> "LLaDAConfig":
    """Reads LLaDA's OLMo-style ``config.json`` (``d_model``, ``n_layers``, ``n_heads``, ...)."""
    for key, want in (("layer_norm_type", "rms"), ("activation_type", "silu")):
      if hf.get(key, want) != want:
        raise ConfigError(key, hf[key], repr(want))
    for key in ("scale_logits", "input_emb_norm", "alibi"):
      if hf.get(key):
        raise ConfigError(key, hf[key], "false (not supported)")
    heads = hf["n_heads"]
    bias = bool(hf.get("include_bias", False))
    kwargs = dict(
        vocab_size=hf.get("embedding_size") or hf["vocab_size"], hidden_size=hf["d_model"],
        intermediate_size=hf.get("mlp_hidden_size") or hf["mlp_ratio"] * hf["d_model"],
        num_hidden_layers=hf["n_layers"], num_attention_heads=heads,
        num_key_value_heads=hf.get("n_kv_heads") or heads, head_dim=hf["d_model"] // heads,
        rms_norm_eps=hf.get("rms_norm_eps", 1e-5), rope_theta=float(hf.get("rope_theta", 10000.0)),
        max_position_embeddings=hf.get("max_sequence_length", 4096),
        tie_word_embeddings=bool(hf.get("weight_tying", False)),
        qkv_bias=bias or bool(hf.get("include_qkv_bias", False)), o_bias=bias, mlp_bias=bias,
        causal=False, model_type="llada",
        mask_token_id=hf.get("mask_token_id", DEFAULT_MASK_ID))
    kwargs.update(overrides)
    return cls(**kwargs)

  def to_hf(self) -> dict[str, Any]:
    return dict(
        model_type="llada", architectures=["LLaDAModelLM"], d_model=self.hidden_size,
        n_layers=self.num_hidden_layers, n_heads=self.num_attention_heads,
        n_kv_heads=self.num_key_value_heads, mlp_hidden_size=self.intermediate_size,
        vocab_size=self.vocab_size, embedding_size=self.vocab_size, rope=True, alibi=False,
        rope_theta=self.rope_theta, rms_norm_eps=self.rms_norm_eps, layer_norm_type="rms",
        activation_type="silu", block_type="llama", weight_tying=self.tie_word_embeddings,
        include_bias=self.o_bias, include_qkv_bias=self.qkv_bias,
        max_sequence_length=self.max_position_embeddings, mask_token_id=self.mask_token_id)


_B = "model.transformer.blocks.{i}"
_L = "model.layers.{i}"
RULES = (
    Rule("model.transformer.wte.weight", "model.embed_tokens.embedding"),
    Rule("model.transformer.ln_f.weight", "model.norm.weight"),
    Rule("model.transformer.ff_out.weight", "lm_head.kernel"),
    *(Rule(f"{_B}.{theirs}.{leaf}", f"{_L}.{ours}.{'kernel' if leaf == 'weight' else leaf}")
      for theirs, ours in (("q_proj", "self_attn.q_proj"), ("k_proj", "self_attn.k_proj"),
                           ("v_proj", "self_attn.v_proj"), ("attn_out", "self_attn.o_proj"),
                           ("ff_proj", "mlp.gate_proj"), ("up_proj", "mlp.up_proj"),
                           ("ff_out", "mlp.down_proj"))
      for leaf in ("weight", "bias")),
    Rule(f"{_B}.attn_norm.weight", f"{_L}.input_layernorm.weight"),
    Rule(f"{_B}.ff_norm.weight", f"{_L}.post_attention_layernorm.weight"),
)

register_family(Family("llada", LLaDAConfig.from_llada, LlamaForCausalLM, RULES))
