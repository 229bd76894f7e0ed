"""LLaMA-family decoder (LLaMA 1/2/3.x, Qwen2/2.5; bidirectional for LLaDA/Dream) in flax.nnx.

One module tree covers every variant through ``LlamaConfig`` switches: grouped-query attention,
optional q/k/v (and o) biases, RMSNorm, SwiGLU, RoPE (default / linear / llama3 scaling), tied or
untied output embeddings, per-layer sliding windows, causal or full attention. Attribute names
mirror ``transformers`` so weight names and LoRA target patterns carry over unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from jaxvlm.errors import ConfigError
from jaxvlm.layers.attention import IMPLEMENTATIONS, AttentionFn, KVCache, attention, make_mask
from jaxvlm.layers.linear import Embed, Linear, RMSNorm
from jaxvlm.layers.rope import apply_rope, inv_frequencies, rope_cos_sin
from jaxvlm.sharding import shard_activation

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def as_dtype(x) -> Any:
  """``"bfloat16"`` / ``jnp.bfloat16`` / numpy dtype -> jnp dtype."""
  if isinstance(x, str):
    if x not in _DTYPES:
      raise ConfigError("dtype", x, f"one of {sorted(_DTYPES)}")
    return _DTYPES[x]
  return jnp.dtype(x).type


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """Architecture of a LLaMA-style decoder, built from a HF ``config.json`` by :meth:`from_hf`."""

  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_hidden_layers: int
  num_attention_heads: int
  num_key_value_heads: int
  head_dim: int
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  rope_scaling: tuple[tuple[str, Any], ...] | None = None  # frozen dict items
  partial_rotary_factor: float = 1.0
  max_position_embeddings: int = 2048
  tie_word_embeddings: bool = False
  qkv_bias: bool = False
  o_bias: bool = False
  mlp_bias: bool = False
  sliding_window: int | None = None
  layer_types: tuple[str, ...] | None = None  # "full_attention" | "sliding_attention" per layer
  causal: bool = True
  attention_impl: str = "xla"
  dtype: str = "float32"
  param_dtype: str = "float32"
  model_type: str = "llama"

  def __post_init__(self):
    if self.num_attention_heads % self.num_key_value_heads:
      raise ConfigError("num_key_value_heads", self.num_key_value_heads,
                        f"a divisor of num_attention_heads={self.num_attention_heads}")
    if self.attention_impl not in IMPLEMENTATIONS:
      raise ConfigError("attention_impl", self.attention_impl, f"one of {IMPLEMENTATIONS}")
    if self.layer_types is not None and len(self.layer_types) != self.num_hidden_layers:
      raise ConfigError("layer_types", self.layer_types,
                        f"{self.num_hidden_layers} entries (one per layer)")
    inv_frequencies(self.head_dim, self.rope_theta, self.rope_scaling_dict,
                    self.partial_rotary_factor)  # validates rope_scaling early

  @property
  def rope_scaling_dict(self) -> dict[str, Any] | None:
    return dict(self.rope_scaling) if self.rope_scaling else None

  def layer_window(self, i: int) -> int | None:
    if self.layer_types is not None and self.layer_types[i] == "sliding_attention":
      return self.sliding_window
    return None

  @classmethod
  def from_hf(cls, hf: Mapping[str, Any], **overrides) -> "LlamaConfig":
    """Reads a ``llama`` / ``qwen2`` config.json dict (transformers 4.x and 5.x spellings)."""
    model_type = hf.get("model_type", "llama")
    act = hf.get("hidden_act", "silu")
    if act != "silu":
      raise ConfigError("hidden_act", act, "'silu' (SwiGLU)")
    heads = hf["num_attention_heads"]
    rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    theta = rope.pop("rope_theta", hf.get("rope_theta", 10000.0))
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    layers = hf["num_hidden_layers"]
    layer_types = hf.get("layer_types")
    window = hf.get("sliding_window") if hf.get("use_sliding_window", False) else None
    if layer_types is None and window is not None:
      first = hf.get("max_window_layers", layers)
      layer_types = ["sliding_attention" if i >= first else "full_attention" for i in range(layers)]
    if layer_types is not None and "sliding_attention" not in layer_types:
      layer_types = None
    if layer_types is not None and window is None:
      window = hf.get("sliding_window")
    is_qwen = model_type.startswith("qwen2")
    kwargs = dict(
        vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"], num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6), rope_theta=float(theta),
        rope_scaling=None if rope_type == "default" else tuple(sorted(rope.items())),
        partial_rotary_factor=hf.get("partial_rotary_factor", 1.0),
        max_position_embeddings=hf.get("max_position_embeddings", 2048),
        tie_word_embeddings=hf.get("tie_word_embeddings", False),
        qkv_bias=True if is_qwen else hf.get("attention_bias", False),
        o_bias=False if is_qwen else hf.get("attention_bias", False),
        mlp_bias=hf.get("mlp_bias", False), sliding_window=window,
        layer_types=tuple(layer_types) if layer_types is not None else None,
        model_type=model_type)
    kwargs.update(overrides)
    return cls(**kwargs)

  def to_hf(self) -> dict[str, Any]:
    """The ``config.json`` dict ``transformers`` reads back (llama or qwen2 layout)."""
    rope = {"rope_type": "default", **(self.rope_scaling_dict or {}), "rope_theta": self.rope_theta}
    out = dict(
        model_type=self.model_type, vocab_size=self.vocab_size, hidden_size=self.hidden_size,
        intermediate_size=self.intermediate_size, num_hidden_layers=self.num_hidden_layers,
        num_attention_heads=self.num_attention_heads,
        num_key_value_heads=self.num_key_value_heads, head_dim=self.head_dim,
        hidden_act="silu", rms_norm_eps=self.rms_norm_eps, rope_theta=self.rope_theta,
        rope_parameters=rope, rope_scaling=None if self.rope_scaling is None else rope,
        max_position_embeddings=self.max_position_embeddings,
        tie_word_embeddings=self.tie_word_embeddings)
    if self.model_type.startswith("qwen2"):
      out.update(use_sliding_window=self.layer_types is not None,
                 sliding_window=self.sliding_window, layer_types=list(self.layer_types or [
                     "full_attention"] * self.num_hidden_layers),
                 max_window_layers=self.num_hidden_layers)
      out["architectures"] = ["Qwen2ForCausalLM"]
    else:
      out.update(attention_bias=self.qkv_bias, mlp_bias=self.mlp_bias,
                 architectures=["LlamaForCausalLM"])
    return out


@flax.struct.dataclass
class ModelOutput:
  """``logits [B, S, V]``; optional per-layer ``hidden_states`` (L+1, HF order), ``attentions``
  (L × ``[B, Hq, Sq, Sk]``) and the updated ``cache``."""

  logits: jax.Array | None
  hidden_states: tuple[jax.Array, ...] | None = None
  attentions: tuple[jax.Array, ...] | None = None
  cache: KVCache | None = None
  last_hidden_state: jax.Array | None = None


class Attention(nnx.Module):
  """Grouped-query self-attention with RoPE, optional KV cache and a replaceable core."""

  def __init__(self, cfg: LlamaConfig, layer_idx: int, rngs: nnx.Rngs):
    dt, pdt = as_dtype(cfg.dtype), as_dtype(cfg.param_dtype)
    h, d = cfg.hidden_size, cfg.head_dim
    self.layer_idx, self.cfg = layer_idx, cfg
    lin = lambda i, o, bias, axes: Linear(i, o, use_bias=bias, logical_axes=axes, dtype=dt,
                                          param_dtype=pdt, rngs=rngs)
    self.q_proj = lin(h, cfg.num_attention_heads * d, cfg.qkv_bias, ("embed", "heads"))
    self.k_proj = lin(h, cfg.num_key_value_heads * d, cfg.qkv_bias, ("embed", "kv_heads"))
    self.v_proj = lin(h, cfg.num_key_value_heads * d, cfg.qkv_bias, ("embed", "kv_heads"))
    self.o_proj = lin(cfg.num_attention_heads * d, h, cfg.o_bias, ("heads", "embed"))

  def __call__(self, x, cos, sin, mask, cache: KVCache | None, *, return_probs: bool,
               attention_fn: AttentionFn | None, units=None):
    """``units`` (adaptive width, from a gate's hook): computes only some heads through
    ``units.project(name, proj, x)`` (q/k/v), ``units.update_cache(cache, layer, k, v)`` and
    ``units.output(name, proj, h)`` (o_proj); the head counts follow the projections' widths."""
    cfg = self.cfg
    b, s, _ = x.shape
    project = (lambda name, proj, x: proj(x)) if units is None else units.project
    q, k, v = (project(n, getattr(self, n), x) for n in ("q_proj", "k_proj", "v_proj"))
    q = q.reshape(b, s, -1, cfg.head_dim)
    k = k.reshape(b, s, -1, cfg.head_dim)
    v = v.reshape(b, s, -1, cfg.head_dim)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    q = shard_activation(q, ("batch", "length", "act_heads", "head_dim"))
    if cache is not None:
      cache, k, v = (cache.update_layer(self.layer_idx, k, v) if units is None
                     else units.update_cache(cache, self.layer_idx, k, v))
    probs = None
    if attention_fn is not None and not return_probs:
      out = attention_fn(q, k, v, mask, self.layer_idx)
    else:
      out, probs = attention(q, k, v, mask, implementation=cfg.attention_impl,
                             causal=cfg.causal, return_probs=return_probs)
    out = out.reshape(b, s, -1)
    out = self.o_proj(out) if units is None else units.output("o_proj", self.o_proj, out)
    return out, probs, cache


class MLP(nnx.Module):
  """SwiGLU: ``down(silu(gate(x)) * up(x))``."""

  def __init__(self, cfg: LlamaConfig, rngs: nnx.Rngs):
    dt, pdt = as_dtype(cfg.dtype), as_dtype(cfg.param_dtype)
    lin = lambda i, o, axes: Linear(i, o, use_bias=cfg.mlp_bias, logical_axes=axes, dtype=dt,
                                    param_dtype=pdt, rngs=rngs)
    self.gate_proj = lin(cfg.hidden_size, cfg.intermediate_size, ("embed", "mlp"))
    self.up_proj = lin(cfg.hidden_size, cfg.intermediate_size, ("embed", "mlp"))
    self.down_proj = lin(cfg.intermediate_size, cfg.hidden_size, ("mlp", "embed"))

  def __call__(self, x, units=None):
    """``units``: only some intermediate rows (see :meth:`Attention.__call__`)."""
    if units is None:
      return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))
    h = jax.nn.silu(units.project("gate_proj", self.gate_proj, x)) * units.project(
        "up_proj", self.up_proj, x)
    return units.output("down_proj", self.down_proj, h)


class DecoderLayer(nnx.Module):
  """Pre-norm residual block: attention then SwiGLU MLP."""

  def __init__(self, cfg: LlamaConfig, layer_idx: int, rngs: nnx.Rngs):
    dt, pdt = as_dtype(cfg.dtype), as_dtype(cfg.param_dtype)
    norm = lambda: RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, dtype=dt, param_dtype=pdt)
    self.input_layernorm = norm()
    self.self_attn = Attention(cfg, layer_idx, rngs)
    self.post_attention_layernorm = norm()
    self.mlp = MLP(cfg, rngs)

  def __call__(self, x, cos, sin, mask, cache, *, return_probs=False, attention_fn=None,
               units=None):
    h, probs, cache = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache,
                                     return_probs=return_probs, attention_fn=attention_fn,
                                     units=units)
    x = x + h
    x = x + self.mlp(self.post_attention_layernorm(x), units=units)
    return shard_activation(x, ("batch", "length", "embed")), probs, cache


class LlamaModel(nnx.Module):
  """Embeddings, decoder layers and final norm (no LM head)."""

  def __init__(self, cfg: LlamaConfig, rngs: nnx.Rngs):
    dt, pdt = as_dtype(cfg.dtype), as_dtype(cfg.param_dtype)
    self.cfg = cfg
    self.embed_tokens = Embed(cfg.vocab_size, cfg.hidden_size, dtype=dt, param_dtype=pdt,
                              rngs=rngs)
    self.layers = nnx.List([DecoderLayer(cfg, i, rngs) for i in range(cfg.num_hidden_layers)])
    self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, dtype=dt, param_dtype=pdt)

  def rope_tables(self, position_ids: jax.Array):
    """RoPE cos/sin ``[B, S, D]``; the frequencies are trace-time constants of the config."""
    cfg = self.cfg
    inv, scaling = inv_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling_dict,
                                   cfg.partial_rotary_factor)
    return rope_cos_sin(position_ids, inv, scaling)

  def __call__(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None,
               cache: KVCache | None = None, *, position_embeddings=None,
               output_hidden_states: bool = False, output_attentions: bool = False,
               attention_fn: AttentionFn | None = None, layer_gates: LayerGates = None,
               skip_gated: bool = False, prune=None) -> ModelOutput:
    """Runs the decoder. See :class:`LlamaForCausalLM` for the arguments."""
    cfg = self.cfg
    if inputs_embeds is None:
      if input_ids is None:
        raise ConfigError("input_ids", None, "input_ids or inputs_embeds")
      inputs_embeds = self.embed_tokens(jnp.asarray(input_ids))
    x = shard_activation(inputs_embeds.astype(as_dtype(cfg.dtype)), ("batch", "length", "embed"))
    b, s, _ = x.shape
    valid = (jnp.ones((b, s), bool) if attention_mask is None
             else jnp.asarray(attention_mask).astype(bool))
    start = 0 if cache is None else cache.index
    if position_ids is None and position_embeddings is None:
      position_ids = default_position_ids(valid, cache)
    cos, sin = (position_embeddings if position_embeddings is not None
                else self.rope_tables(jnp.asarray(position_ids)))
    query_slots = start + jnp.arange(s)
    if cache is not None:
      cache = cache.with_new_tokens(valid)
      key_slots, key_valid = jnp.arange(cache.max_len), cache.key_valid
    else:
      key_slots, key_valid = query_slots, (None if attention_mask is None else valid)
    windows = {cfg.layer_window(i) for i in range(cfg.num_hidden_layers)}
    # No mask array when nothing but the causal flag restricts attention: fused kernels then
    # run unmasked. A bidirectional model's attention_fn gets mask=None (= attend everywhere).
    unrestricted = (cache is None and attention_mask is None and windows == {None}
                    and not output_attentions)
    implicit = unrestricted and (not cfg.causal or (attention_fn is None
                                                    and cfg.attention_impl != "xla"))
    masks = {w: None if implicit else make_mask(query_slots, key_slots, key_valid,
                                                 causal=cfg.causal, sliding_window=w)
             for w in windows}
    late_from = cfg.num_hidden_layers if prune is None else prune.layer
    if prune is None and cache is not None and cache.late_valid is not None:  # pruned cache
      late_from = cache.late_from
      late_masks = {w: make_mask(query_slots, key_slots, cache.late_valid, causal=cfg.causal,
                                 sliding_window=w) for w in windows}
    hidden, attns = [], []
    for i, layer in enumerate(self.layers):
      if i == late_from and prune is not None:
        x, cos, sin, cache, masks = self._drop_tokens(prune.kept_index, i, x, cos, sin, valid,
                                                      cache, start, windows)
      elif i == late_from:
        masks = late_masks
      if output_hidden_states:
        hidden.append(x)
      gate = layer_gates(i, x) if callable(layer_gates) else (
          None if layer_gates is None else layer_gates[:, i])
      if gate is None:
        x, probs, cache = layer(x, cos, sin, masks[cfg.layer_window(i)], cache,
                                return_probs=output_attentions, attention_fn=attention_fn)
      else:
        if output_attentions:
          raise ConfigError("output_attentions", True, "False when layer_gates are given")
        run = gate if callable(gate) else functools.partial(gated_layer, gate=gate)
        x, cache = run(layer, x, cos, sin, masks[cfg.layer_window(i)], cache,
                       attention_fn=attention_fn, skip=skip_gated)
        probs = None
      attns.append(probs)
    if prune is not None and prune.layer == len(self.layers):  # kept tokens of the last layer
      x, cos, sin, cache, _ = self._drop_tokens(prune.kept_index, prune.layer, x, cos, sin, valid,
                                                cache, start, windows)
    x = self.norm(x)
    if output_hidden_states:
      hidden.append(x)
    if cache is not None:
      cache = cache.advance(s)
    return ModelOutput(logits=None, hidden_states=tuple(hidden) if output_hidden_states else None,
                       attentions=tuple(attns) if output_attentions else None, cache=cache,
                       last_hidden_state=x)

  def _drop_tokens(self, kept_index, layer, x, cos, sin, valid, cache, start, windows):
    """Keeps the tokens ``kept_index [B, S']`` (increasing, -1 = pad) of the activations and RoPE
    tables (original positions) from ``layer`` on; returns them with the masks of the shortened
    queries (and the cache set to write the kept tokens' keys/values at their own slots)."""
    cfg = self.cfg
    kept_index = jnp.asarray(kept_index, jnp.int32)
    src = jnp.maximum(kept_index, 0)
    take = lambda a: jnp.take_along_axis(a, src.reshape(src.shape + (1,) * (a.ndim - 2)), axis=1)
    x, cos, sin = take(x), take(cos), take(sin)
    if cache is None:
      slots = jnp.arange(x.shape[1])
      q_slots, k_slots = slots, slots
      k_valid = jnp.take_along_axis(valid, src, axis=1) & (kept_index >= 0)
    else:
      cache = cache.start_pruning(layer, kept_index, valid.shape[1])
      q_slots, k_slots, k_valid = start + src, jnp.arange(cache.max_len), cache.late_valid
    masks = {w: make_mask(q_slots, k_slots, k_valid, causal=cfg.causal, sliding_window=w)
             for w in windows}
    return x, cos, sin, cache, masks


# layer_gates: ``[B, L]`` per-row layer weights, or ``fn(layer_idx, x) -> gate | None`` called
# before each layer (None = run the layer ungated). A gate is ``[B]`` (:func:`gated_layer`) or a
# callable ``(layer, x, cos, sin, mask, cache, *, attention_fn, skip) -> (x, cache)`` that runs the
# layer itself (adaptive width: ``jaxvlm.methods.adallava.units``). Lets a method decide the plan
# from hidden states.
LayerGates = jax.Array | Callable[[int, jax.Array], Any] | None


def gated_layer(layer: DecoderLayer, x, cos, sin, mask, cache, *, gate: jax.Array,
                attention_fn=None, skip: bool = False):
  """``x + gate * (layer(x) - x)`` per row (``gate [B]``); returns ``(x, cache)``.

  With ``skip`` the layer runs under ``lax.cond`` only when some row's gate is non-zero, so a layer
  no row selected costs nothing (its cache slots stay as they were). Training keeps ``skip=False``
  so that straight-through gates get gradients from every layer.
  """
  def run(x, cache):
    y, _, cache = layer(x, cos, sin, mask, cache, attention_fn=attention_fn)
    return x + gate.astype(y.dtype)[:, None, None] * (y - x), cache

  if not skip:
    return run(x, cache)
  return jax.lax.cond(jnp.any(gate != 0), run, lambda x, cache: (x, cache), x, cache)


def default_position_ids(valid: jax.Array, cache: KVCache | None) -> jax.Array:
  """Positions that skip padding: ``cumsum(mask) - 1`` continued from the cache's valid count."""
  offset = 0 if cache is None else jnp.sum(cache.key_valid, axis=1, keepdims=True)
  return jnp.maximum(offset + jnp.cumsum(valid, axis=1) - 1, 0).astype(jnp.int32)


class LlamaForCausalLM(nnx.Module):
  """Decoder + LM head (tied to the embeddings when ``tie_word_embeddings``)."""

  def __init__(self, cfg: LlamaConfig, rngs: nnx.Rngs):
    self.config = cfg
    self.model = LlamaModel(cfg, rngs)
    if not cfg.tie_word_embeddings:
      self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, logical_axes=("embed", "vocab"),
                            dtype=as_dtype(cfg.dtype), param_dtype=as_dtype(cfg.param_dtype),
                            rngs=rngs)

  def logits(self, hidden: jax.Array) -> jax.Array:
    if self.config.tie_word_embeddings:
      return self.model.embed_tokens.attend(hidden)
    return self.lm_head(hidden)

  def init_cache(self, batch: int, max_len: int, dtype=None) -> KVCache:
    cfg = self.config
    return KVCache.init(cfg.num_hidden_layers, batch, max_len, cfg.num_key_value_heads,
                        cfg.head_dim, dtype or as_dtype(cfg.dtype))

  def __call__(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None,
               cache: KVCache | None = None, *, position_embeddings=None,
               output_hidden_states: bool = False, output_attentions: bool = False,
               attention_fn: AttentionFn | None = None, logits_to_keep: int = 0,
               layer_gates: LayerGates = None, skip_gated: bool = False,
               prune=None) -> ModelOutput:
    """Forward pass.

    Args:
      input_ids: ``[B, S]`` token ids (or ``inputs_embeds [B, S, H]``).
      attention_mask: ``[B, S]`` 1 for tokens, 0 for padding (left padding for generation).
      position_ids: ``[B, S]``; default skips padding (``cumsum(mask) - 1``).
      cache: a :class:`KVCache`; new keys/values are written at ``cache.index``.
      position_embeddings: precomputed ``(cos, sin)`` tables (multimodal RoPE) instead of ids.
      output_hidden_states / output_attentions: also return every layer's states / probabilities.
      attention_fn: replaces the attention core (sparse attention); ``(q, k, v, mask, layer)``,
        ``mask`` None when a bidirectional model attends everywhere (no padding).
      logits_to_keep: if > 0, compute logits for the last ``logits_to_keep`` positions only.
      layer_gates: per-row layer gates ``[B, L]`` or a callable ``(layer_idx, x) -> [B] | None``
        (adaptive depth): layer ``i`` outputs ``x + g * (layer(x) - x)``; see :func:`gated_layer`.
        The callable may return a gate that runs the layer itself (adaptive width).
      skip_gated: with ``layer_gates``, layers whose gates are all zero are not computed.
      prune: a :class:`~jaxvlm.models.multimodal.LayerPrune`: from its ``layer`` on only the
        tokens ``kept_index`` go on, at their original positions (SGL). With a cache (prefill),
        the later layers' cache holds only the kept tokens and decoding continues on it.
    """
    out = self.model(input_ids, attention_mask, position_ids, inputs_embeds, cache,
                     position_embeddings=position_embeddings,
                     output_hidden_states=output_hidden_states,
                     output_attentions=output_attentions, attention_fn=attention_fn,
                     layer_gates=layer_gates, skip_gated=skip_gated, prune=prune)
    h = out.last_hidden_state
    if logits_to_keep:
      h = h[:, -logits_to_keep:]
    return out.replace(logits=self.logits(h).astype(jnp.float32))
