"""InternLM2 decoder (InternVL2-2B/8B language model) as a :class:`LlamaForCausalLM` + weight rules.

InternLM2 is LLaMA with renamed tensors and a packed ``attention.wqkv``: its output rows are grouped
per KV head as ``[(q_0 .. q_{g-1}, k, v) for each kv head]`` (``g`` = query heads per KV head,
each block ``head_dim`` rows), i.e. ``rearrange("(h gs d) ...", gs=g + 2)`` in
``modeling_internlm2.py``. The split depends on the head counts, so the rules are built per
config by :func:`rules_for`.

``rope_scaling`` of type ``dynamic`` (dynamic NTK) equals the default RoPE up to
``max_position_embeddings`` and is read as default.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from jaxvlm.models.llama.modeling import LlamaConfig, LlamaForCausalLM
from jaxvlm.models.registry import Family, register_family
from jaxvlm.models.weights import Rule


def config_from_hf(hf: Mapping[str, Any], **overrides) -> LlamaConfig:
  """``internlm2`` config.json dict -> :class:`LlamaConfig` (``bias`` covers q/k/v and o)."""
  hf = dict(hf)
  rope = hf.get("rope_scaling") or {}
  if rope.get("type", rope.get("rope_type")) == "dynamic":
    hf["rope_scaling"] = None
  hf.update(model_type="llama", attention_bias=hf.get("bias", False), hidden_act="silu")
  return LlamaConfig.from_hf(hf, **{"model_type": "internlm2", **overrides})


def config_to_hf(cfg: LlamaConfig) -> dict[str, Any]:
  out = {k: v for k, v in cfg.to_hf().items() if k not in ("attention_bias", "mlp_bias")}
  out.update(model_type="internlm2", bias=cfg.qkv_bias, architectures=["InternLM2ForCausalLM"],
             rope_scaling=None if cfg.rope_scaling is None else dict(cfg.rope_scaling))
  return out


def wqkv_split(cfg: LlamaConfig):
  """(split, merge) between the packed ``wqkv`` tensor (HF layout, rows first) and (k, q, v).

  k comes first: ``export_tensors`` finds a packed rule by its first target and visits parameters
  in sorted order (``k_proj`` < ``q_proj``).
  """
  kv, d = cfg.num_key_value_heads, cfg.head_dim
  g = cfg.num_attention_heads // kv

  def split(t: np.ndarray):
    grouped = t.reshape((kv, g + 2, d) + t.shape[1:])
    rows = lambda x: x.reshape((-1,) + t.shape[1:])
    return rows(grouped[:, g]), rows(grouped[:, :g]), rows(grouped[:, g + 1])

  def merge(parts):
    k, q, v = (np.asarray(p) for p in parts)
    tail = q.shape[1:]
    grouped = np.concatenate([q.reshape((kv, g, d) + tail), k.reshape((kv, 1, d) + tail),
                              v.reshape((kv, 1, d) + tail)], axis=1)
    return grouped.reshape((-1,) + tail)

  return split, merge


def rules_for(cfg: LlamaConfig) -> tuple[Rule, ...]:
  """HF ``InternLM2ForCausalLM`` names <-> our :class:`LlamaForCausalLM` paths."""
  split, merge = wqkv_split(cfg)
  attn, lyr = "model.layers.{i}.self_attn.", "model.layers.{i}."
  qkv = lambda leaf: tuple(f"{attn}{n}.{leaf}" for n in ("k_proj", "q_proj", "v_proj"))
  return (
      Rule("model.tok_embeddings.weight", "model.embed_tokens.embedding"),
      Rule("model.layers.{i}.attention.wqkv.weight", qkv("kernel"), split, merge),
      Rule("model.layers.{i}.attention.wqkv.bias", qkv("bias"), split, merge),
      Rule("model.layers.{i}.attention.wo.weight", attn + "o_proj.kernel"),
      Rule("model.layers.{i}.attention.wo.bias", attn + "o_proj.bias"),
      Rule("model.layers.{i}.feed_forward.w1.weight", lyr + "mlp.gate_proj.kernel"),
      Rule("model.layers.{i}.feed_forward.w3.weight", lyr + "mlp.up_proj.kernel"),
      Rule("model.layers.{i}.feed_forward.w2.weight", lyr + "mlp.down_proj.kernel"),
      Rule("model.layers.{i}.attention_norm.weight", lyr + "input_layernorm.weight"),
      Rule("model.layers.{i}.ffn_norm.weight", lyr + "post_attention_layernorm.weight"),
      Rule("model.norm.weight", "model.norm.weight"),
      Rule("output.weight", "lm_head.kernel"),
  )


IGNORE = (r".*rotary_emb\.inv_freq$",)

register_family(Family("internlm2", config_from_hf, LlamaForCausalLM, rules_for, IGNORE,
                       config_to_hf))

__all__ = ["IGNORE", "LlamaForCausalLM", "config_from_hf", "config_to_hf", "rules_for",
           "wqkv_split"]
