"""Vision transformer shared by CLIP and InternViT (flax.nnx).

One module tree covers both towers through :class:`VisionConfig` switches: patch embedding (a
strided convolution written as an einsum over patches), CLS token + learned absolute position
embeddings (resized for other grids with PyTorch's bicubic kernel), optional pre-norm (CLIP ``pre_layrnorm``),
pre-norm blocks with optional q/k RMSNorm and layer scale (InternViT ``ls1``/``ls2``), LayerNorm
or RMSNorm, and an optional final norm. Pixels are ``[B, C, H, W]`` as HF processors give them.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvlm.errors import ConfigError, ShapeError
from jaxvlm.layers.attention import attention
from jaxvlm.layers.linear import LayerNorm, Linear, RMSNorm
from jaxvlm.models.llama.modeling import as_dtype

ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
}


def activation(name: str):
  if name not in ACTIVATIONS:
    raise ConfigError("hidden_act", name, f"one of {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def _pair_first(x) -> int:
  return int(x[0]) if isinstance(x, (list, tuple)) else int(x)


@dataclasses.dataclass(frozen=True)
class VisionConfig:
  """Architecture of a ViT tower (CLIP or InternViT flavour)."""

  hidden_size: int
  intermediate_size: int
  num_hidden_layers: int
  num_attention_heads: int
  image_size: int
  patch_size: int
  num_channels: int = 3
  layer_norm_eps: float = 1e-5
  norm_type: str = "layer_norm"  # "layer_norm" | "rms_norm"
  hidden_act: str = "quick_gelu"
  qkv_bias: bool = True
  patch_bias: bool = False
  pre_norm: bool = False  # CLIP pre_layrnorm
  # final norm: "sequence" (HF InternVL ``layernorm``: part of last_hidden_state), "pooled" (CLIP
  # ``post_layernorm``: normalises only the pooled CLS output, unused by VLMs) or None.
  post_norm: str | None = "pooled"
  layer_scale: bool = False  # InternViT ls1 / ls2
  qk_norm: bool = False  # InternViT-6B q_norm / k_norm (RMSNorm over all heads)
  attention_impl: str = "xla"
  dtype: str = "float32"
  param_dtype: str = "float32"
  model_type: str = "clip_vision_model"
  hf_json: str = "{}"  # the config.json this came from, for to_hf

  def __post_init__(self):
    if self.post_norm not in (None, "sequence", "pooled"):
      raise ConfigError("post_norm", self.post_norm, "None, 'sequence' or 'pooled'")
    if self.norm_type not in ("layer_norm", "rms_norm"):
      raise ConfigError("norm_type", self.norm_type, "'layer_norm' or 'rms_norm'")
    activation(self.hidden_act)
    if self.hidden_size % self.num_attention_heads:
      raise ConfigError("num_attention_heads", self.num_attention_heads,
                        f"a divisor of hidden_size={self.hidden_size}")

  @property
  def grid(self) -> int:
    return self.image_size // self.patch_size

  @classmethod
  def from_clip_hf(cls, hf: Mapping[str, Any], **overrides) -> "VisionConfig":
    """Reads a ``clip_vision_model`` config (or the ``vision_config`` of a LLaVA config)."""
    kw = dict(hidden_size=hf["hidden_size"], intermediate_size=hf["intermediate_size"],
              num_hidden_layers=hf["num_hidden_layers"],
              num_attention_heads=hf["num_attention_heads"],
              image_size=_pair_first(hf.get("image_size", 224)),
              patch_size=_pair_first(hf.get("patch_size", 32)),
              num_channels=hf.get("num_channels", 3), layer_norm_eps=hf.get("layer_norm_eps", 1e-5),
              hidden_act=hf.get("hidden_act", "quick_gelu"), qkv_bias=True, patch_bias=False,
              pre_norm=True, post_norm="pooled", model_type="clip_vision_model",
              hf_json=json.dumps(hf))
    kw.update(overrides)
    return cls(**kw)

  def to_hf(self) -> dict[str, Any]:
    return json.loads(self.hf_json)


def _norm(cfg: VisionConfig, norm_type: str | None = None):
  """A block norm of ``cfg.norm_type`` (or ``norm_type``) over ``hidden_size``."""
  dt, pdt = as_dtype(cfg.dtype), as_dtype(cfg.param_dtype)
  if (norm_type or cfg.norm_type) == "rms_norm":
    return RMSNorm(cfg.hidden_size, eps=cfg.layer_norm_eps, dtype=dt, param_dtype=pdt)
  return LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps, dtype=dt, param_dtype=pdt)


class PatchEmbedding(nnx.Module):
  """Non-overlapping ``patch_size`` convolution; ``weight [D, C, p, p]`` as in PyTorch."""

  def __init__(self, cfg: VisionConfig, rngs: nnx.Rngs):
    p, c, d = cfg.patch_size, cfg.num_channels, cfg.hidden_size
    self.patch_size, self.dtype = p, as_dtype(cfg.dtype)
    pdt = as_dtype(cfg.param_dtype)
    self.weight = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (d, c, p, p), pdt),
                            logical_axes=("embed", None, None, None))
    self.bias = (nnx.Param(jnp.zeros((d,), pdt), logical_axes=("embed",)) if cfg.patch_bias
                 else None)

  def __call__(self, pixels: jax.Array) -> jax.Array:
    """``[B, C, H, W]`` -> ``[B, H/p, W/p, D]``."""
    b, c, h, w = pixels.shape
    p = self.patch_size
    if h % p or w % p:
      raise ShapeError("pixel_values", pixels.shape, f"height and width divisible by {p}")
    x = pixels.astype(self.dtype).reshape(b, c, h // p, p, w // p, p)
    y = jnp.einsum("bchpwq,dcpq->bhwd", x, self.weight[...].astype(self.dtype))
    return y if self.bias is None else y + self.bias[...].astype(self.dtype)


def bicubic_matrix(n_in: int, n_out: int, a: float = -0.75) -> np.ndarray:
  """``[n_out, n_in]`` weights of ``torch.nn.functional.interpolate(mode="bicubic",
  align_corners=False)`` along one axis (cubic convolution ``a = -0.75``, clamped borders)."""
  src = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
  x0 = np.floor(src)
  t = src - x0

  def kernel(d):
    d = np.abs(d)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))

  m = np.zeros((n_out, n_in))
  for k in range(-1, 3):
    np.add.at(m, (np.arange(n_out), np.clip(x0 + k, 0, n_in - 1).astype(int)), kernel(t - k))
  return m


class VisionEmbeddings(nnx.Module):
  """Patch embedding, CLS token and absolute position embeddings."""

  def __init__(self, cfg: VisionConfig, rngs: nnx.Rngs):
    pdt = as_dtype(cfg.param_dtype)
    init = nnx.initializers.normal(0.02)
    self.cfg = cfg
    self.patch_embedding = PatchEmbedding(cfg, rngs)
    self.class_embedding = nnx.Param(init(rngs.params(), (cfg.hidden_size,), pdt),
                                     logical_axes=("embed",))
    self.position_embedding = nnx.Param(
        init(rngs.params(), (cfg.grid * cfg.grid + 1, cfg.hidden_size), pdt),
        logical_axes=(None, "embed"))

  def positions(self, gh: int, gw: int) -> jax.Array:
    """``[1 + gh*gw, D]`` position table, bicubically resized when the grid differs."""
    pos = self.position_embedding[...].astype(as_dtype(self.cfg.dtype))
    g = self.cfg.grid
    if (gh, gw) == (g, g):
      return pos
    mh, mw = (jnp.asarray(bicubic_matrix(g, n), pos.dtype) for n in (gh, gw))
    patch = jnp.einsum("hH,wW,HWd->hwd", mh, mw, pos[1:].reshape(g, g, -1))
    return jnp.concatenate([pos[:1], patch.reshape(gh * gw, -1)], axis=0)

  def __call__(self, pixels: jax.Array) -> jax.Array:
    x = self.patch_embedding(pixels)
    b, gh, gw, d = x.shape
    cls = jnp.broadcast_to(self.class_embedding[...].astype(x.dtype), (b, 1, d))
    x = jnp.concatenate([cls, x.reshape(b, gh * gw, d)], axis=1)
    return x + self.positions(gh, gw)[None]


class VisionAttention(nnx.Module):
  """Bidirectional multi-head attention with optional q/k RMSNorm over all heads."""

  def __init__(self, cfg: VisionConfig, rngs: nnx.Rngs):
    dt, pdt = as_dtype(cfg.dtype), as_dtype(cfg.param_dtype)
    d = cfg.hidden_size
    self.cfg = cfg
    lin = lambda bias, axes: Linear(d, d, use_bias=bias, logical_axes=axes, dtype=dt,
                                    param_dtype=pdt, rngs=rngs)
    self.q_proj = lin(cfg.qkv_bias, ("embed", "heads"))
    self.k_proj = lin(cfg.qkv_bias, ("embed", "heads"))
    self.v_proj = lin(cfg.qkv_bias, ("embed", "heads"))
    self.o_proj = lin(True, ("heads", "embed"))
    if cfg.qk_norm:
      self.q_norm = RMSNorm(d, eps=cfg.layer_norm_eps, dtype=dt, param_dtype=pdt)
      self.k_norm = RMSNorm(d, eps=cfg.layer_norm_eps, dtype=dt, param_dtype=pdt)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """``mask`` (optional, ``[B, 1|H, S, S]``, True = may attend): the CLIP text tower's causal
    + padding mask; the vision towers attend bidirectionally (None)."""
    cfg = self.cfg
    b, s, d = x.shape
    q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
    if cfg.qk_norm:
      q, k = self.q_norm(q), self.k_norm(k)
    heads = lambda t: t.reshape(b, s, cfg.num_attention_heads, d // cfg.num_attention_heads)
    out, _ = attention(heads(q), heads(k), heads(v), mask, implementation=cfg.attention_impl)
    return self.o_proj(out.reshape(b, s, d))


class VisionMLP(nnx.Module):
  def __init__(self, cfg: VisionConfig, rngs: nnx.Rngs):
    dt, pdt = as_dtype(cfg.dtype), as_dtype(cfg.param_dtype)
    self.act = activation(cfg.hidden_act)
    self.fc1 = Linear(cfg.hidden_size, cfg.intermediate_size, use_bias=True,
                      logical_axes=("embed", "mlp"), dtype=dt, param_dtype=pdt, rngs=rngs)
    self.fc2 = Linear(cfg.intermediate_size, cfg.hidden_size, use_bias=True,
                      logical_axes=("mlp", "embed"), dtype=dt, param_dtype=pdt, rngs=rngs)

  def __call__(self, x):
    return self.fc2(self.act(self.fc1(x)))


class VisionLayer(nnx.Module):
  """``x + ls1 * attn(norm1(x))``, then ``x + ls2 * mlp(norm2(x))`` (ls = 1 without layer scale)."""

  def __init__(self, cfg: VisionConfig, rngs: nnx.Rngs):
    self.norm1, self.norm2 = _norm(cfg), _norm(cfg)
    self.attn = VisionAttention(cfg, rngs)
    self.mlp = VisionMLP(cfg, rngs)
    if cfg.layer_scale:
      pdt = as_dtype(cfg.param_dtype)
      self.ls1 = nnx.Param(jnp.ones((cfg.hidden_size,), pdt), logical_axes=("norm",))
      self.ls2 = nnx.Param(jnp.ones((cfg.hidden_size,), pdt), logical_axes=("norm",))
    self.layer_scale = cfg.layer_scale

  def __call__(self, x, mask=None):
    h = self.attn(self.norm1(x), mask)
    x = x + (h * self.ls1[...].astype(h.dtype) if self.layer_scale else h)
    m = self.mlp(self.norm2(x))
    return x + (m * self.ls2[...].astype(m.dtype) if self.layer_scale else m)


class VisionTransformer(nnx.Module):
  """ViT tower. ``hidden_states(pixels, layer)`` follows HF ``hidden_states`` indexing."""

  def __init__(self, config: VisionConfig, rngs: nnx.Rngs):
    self.config = config
    self.embeddings = VisionEmbeddings(config, rngs)
    if config.pre_norm:
      self.pre_layernorm = _norm(config)
    self.layers = nnx.List([VisionLayer(config, rngs) for _ in range(config.num_hidden_layers)])
    if config.post_norm:  # always a LayerNorm, whatever the blocks use
      self.post_layernorm = _norm(config, "layer_norm")

  def hidden_state(self, pixel_values, layer: int = -1, *, final_norm: bool = False) -> jax.Array:
    """``[B, 1 + patches, D]``: HF ``hidden_states[layer]`` (0 = embeddings), running only the
    layers needed; ``final_norm`` applies a ``"sequence"`` post norm (HF ``last_hidden_state``)."""
    cfg = self.config
    n = cfg.num_hidden_layers
    if not -(n + 1) <= layer <= n:
      raise ConfigError("vision_feature_layer", layer, f"an index into {n + 1} hidden states")
    x = self.embeddings(jnp.asarray(pixel_values))
    if cfg.pre_norm:
      x = self.pre_layernorm(x)
    for block in self.layers[:layer % (n + 1)]:
      x = block(x)
    return self.post_layernorm(x) if final_norm and cfg.post_norm == "sequence" else x

  def __call__(self, pixel_values) -> jax.Array:
    """HF ``last_hidden_state``: every layer, then a ``"sequence"`` post norm."""
    return self.hidden_state(pixel_values, -1, final_norm=True)

  def pooled(self, pixel_values) -> jax.Array:
    """HF ``pooler_output`` of CLIP: ``post_layernorm`` of the last layer's CLS state ``[B, D]``."""
    return self.post_layernorm(self.hidden_state(pixel_values, -1)[:, 0])
