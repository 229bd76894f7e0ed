"""Qwen2.5-VL vision encoder in flax.nnx (HF ``Qwen2_5_VisionTransformerPretrainedModel``).

Patches (``pixel_values [N, C*T*P*P]`` from ``Qwen2VLImageProcessor``) are embedded by the Conv3d
kernel used as one matmul, reordered so that each attention window is contiguous, and run through
RMSNorm / SwiGLU(+bias) blocks with 2-D rotary embeddings; blocks in ``fullatt_block_indexes``
attend within a whole image (frame), the others within windows of ``window_size`` pixels. The
patch merger concatenates each ``spatial_merge_size**2`` block and projects it to the LM width.

The window order, rotary positions and segment masks depend only on ``grid_thw``, which is
therefore a static (host) tuple. Images with identical grids run as a batch of independent
sequences; mixed sizes run as one packed sequence with block-diagonal masks.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvlm.errors import ConfigError, ShapeError
from jaxvlm.layers.attention import IMPLEMENTATIONS, attention
from jaxvlm.layers.linear import Linear, RMSNorm, param
from jaxvlm.layers.rope import apply_rope
from jaxvlm.models.llama.modeling import MLP, as_dtype

Grid = tuple[tuple[int, int, int], ...]


@dataclasses.dataclass(frozen=True)
class VisionConfig:
  """Architecture of the vision tower (HF ``vision_config``)."""

  depth: int
  hidden_size: int
  intermediate_size: int
  num_heads: int
  out_hidden_size: int
  patch_size: int = 14
  temporal_patch_size: int = 2
  spatial_merge_size: int = 2
  window_size: int = 112
  fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
  in_channels: int = 3
  tokens_per_second: int = 4
  rope_theta: float = 10000.0
  mlp_bias: bool = True  # read by the shared SwiGLU ``MLP``
  attention_impl: str = "xla"
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    if self.hidden_size % self.num_heads:
      raise ConfigError("vision_config.num_heads", self.num_heads,
                        f"a divisor of hidden_size={self.hidden_size}")
    if self.attention_impl not in IMPLEMENTATIONS:
      raise ConfigError("attention_impl", self.attention_impl, f"one of {IMPLEMENTATIONS}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @classmethod
  def from_hf(cls, hf: Mapping[str, Any], **overrides) -> "VisionConfig":
    act = hf.get("hidden_act", "silu")
    if act != "silu":
      raise ConfigError("vision_config.hidden_act", act, "'silu'")
    rope = hf.get("rope_parameters") or {}
    kwargs = {f.name: hf[f.name] for f in dataclasses.fields(cls) if f.name in hf}
    kwargs["num_heads"] = hf.get("num_heads", hf.get("num_attention_heads"))
    kwargs["depth"] = hf.get("depth", hf.get("num_hidden_layers"))
    kwargs["fullatt_block_indexes"] = tuple(hf.get("fullatt_block_indexes", ()))
    kwargs["rope_theta"] = float(rope.get("rope_theta", 10000.0))
    kwargs.pop("mlp_bias", None)
    kwargs.update(overrides)
    return cls(**kwargs)

  def to_hf(self) -> dict[str, Any]:
    skip = {"mlp_bias", "attention_impl", "dtype", "param_dtype", "rope_theta"}
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
    out["fullatt_block_indexes"] = list(self.fullatt_block_indexes)
    out.update(model_type="qwen2_5_vl_vision", hidden_act="silu",
               rope_parameters={"rope_type": "axial", "rope_theta": self.rope_theta})
    return out


@functools.lru_cache(maxsize=64)
def vision_layout(grid: Grid, spatial_merge_size: int, window_size: int, patch_size: int):
  """Host-side layout for ``grid`` (HF ``get_vision_window_index`` / position-id semantics).

  Returns ``window_index [N/m²]`` (merged-unit order of the windowed sequence), ``hw [N, 2]``
  rotary positions, full- and window-segment ids ``[N]`` (in windowed order) and the number of
  independent groups (images with one shared grid run as a batch).
  """
  m = spatial_merge_size
  unit = m * m
  win = window_size // m // patch_size
  window_index, window_lens, hw, frame_lens, offset = [], [], [], [], 0
  for t, h, w in grid:
    lh, lw = h // m, w // m
    index = np.arange(t * lh * lw).reshape(t, lh, lw)
    ph, pw = (-lh) % win, (-lw) % win
    padded = np.pad(index, ((0, 0), (0, ph), (0, pw)), constant_values=-1)
    nh, nw = (lh + ph) // win, (lw + pw) // win
    padded = padded.reshape(t, nh, win, nw, win).transpose(0, 1, 3, 2, 4).reshape(t, nh * nw, -1)
    lens = (padded >= 0).sum(-1).reshape(-1)
    flat = padded.reshape(-1)
    window_index.append(flat[flat >= 0] + offset)
    window_lens.extend((lens[lens > 0] * unit).tolist())
    offset += t * lh * lw
    hpos, wpos = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    block = lambda a: a.reshape(lh, m, lw, m).transpose(0, 2, 1, 3).reshape(-1)
    hw.append(np.tile(np.stack([block(hpos), block(wpos)], -1), (t, 1)))
    frame_lens.extend([h * w] * t)
  window_index = np.concatenate(window_index)
  hw = np.concatenate(hw).reshape(-1, unit, 2)[window_index].reshape(-1, 2)
  full_seg = np.repeat(np.arange(len(frame_lens)), frame_lens)
  window_seg = np.repeat(np.arange(len(window_lens)), window_lens)
  groups = len(grid) if len(set(grid)) == 1 else 1
  return window_index, hw, full_seg, window_seg, groups


class VisionAttention(nnx.Module):
  """Bidirectional multi-head attention with a packed ``qkv`` projection and 2-D RoPE."""

  def __init__(self, cfg: VisionConfig, rngs: nnx.Rngs):
    dt, pdt = as_dtype(cfg.dtype), as_dtype(cfg.param_dtype)
    self.cfg = cfg
    self.qkv = Linear(cfg.hidden_size, 3 * cfg.hidden_size, use_bias=True,
                      logical_axes=("embed", "heads"), dtype=dt, param_dtype=pdt, rngs=rngs)
    self.proj = Linear(cfg.hidden_size, cfg.hidden_size, use_bias=True,
                       logical_axes=("heads", "embed"), dtype=dt, param_dtype=pdt, rngs=rngs)

  def __call__(self, x, cos, sin, mask):
    g, n, _ = x.shape
    cfg = self.cfg
    q, k, v = jnp.moveaxis(self.qkv(x).reshape(g, n, 3, cfg.num_heads, cfg.head_dim), 2, 0)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    out, _ = attention(q, k, v, mask, implementation=cfg.attention_impl)
    return self.proj(out.reshape(g, n, cfg.hidden_size))


class VisionBlock(nnx.Module):
  def __init__(self, cfg: VisionConfig, rngs: nnx.Rngs):
    dt, pdt = as_dtype(cfg.dtype), as_dtype(cfg.param_dtype)
    self.norm1 = RMSNorm(cfg.hidden_size, eps=1e-6, dtype=dt, param_dtype=pdt)
    self.norm2 = RMSNorm(cfg.hidden_size, eps=1e-6, dtype=dt, param_dtype=pdt)
    self.attn = VisionAttention(cfg, rngs)
    self.mlp = MLP(cfg, rngs)

  def __call__(self, x, cos, sin, mask):
    x = x + self.attn(self.norm1(x), cos, sin, mask)
    return x + self.mlp(self.norm2(x))


class PatchEmbed(nnx.Module):
  """Conv3d with stride = kernel, i.e. a matmul over flattened ``[C, T, P, P]`` patches
  (``weight`` is the HF ``patch_embed.proj.weight``, ``[hidden, C, T, P, P]``)."""

  def __init__(self, cfg: VisionConfig, rngs: nnx.Rngs):
    self.dtype = as_dtype(cfg.dtype)
    shape = (cfg.hidden_size, cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size,
             cfg.patch_size)
    self.weight = param(rngs, nnx.initializers.normal(0.02), shape,
                             as_dtype(cfg.param_dtype), ("embed", None, None, None, None))

  def __call__(self, patches: jax.Array) -> jax.Array:
    w = self.weight[...]
    return jnp.dot(patches.reshape(patches.shape[0], -1).astype(self.dtype),
                   w.reshape(w.shape[0], -1).T.astype(self.dtype))


class PatchMerger(nnx.Module):
  """RMSNorm, concatenate ``m²`` neighbours, Linear -> GELU -> Linear to the LM width."""

  def __init__(self, cfg: VisionConfig, rngs: nnx.Rngs):
    dt, pdt = as_dtype(cfg.dtype), as_dtype(cfg.param_dtype)
    wide = cfg.hidden_size * cfg.spatial_merge_size ** 2
    self.ln_q = RMSNorm(cfg.hidden_size, eps=1e-6, dtype=dt, param_dtype=pdt)
    self.fc1 = Linear(wide, wide, use_bias=True, logical_axes=("embed", "mlp"), dtype=dt,
                      param_dtype=pdt, rngs=rngs)
    self.fc2 = Linear(wide, cfg.out_hidden_size, use_bias=True, logical_axes=("mlp", "embed"),
                      dtype=dt, param_dtype=pdt, rngs=rngs)

  def __call__(self, x):
    x = self.ln_q(x).reshape(-1, self.fc1.in_features)
    return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class VisionTransformer(nnx.Module):
  """``(pixel_values [N, C*T*P*P], grid_thw) -> features [N / m², out_hidden_size]`` (image order)."""

  def __init__(self, cfg: VisionConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.patch_embed = PatchEmbed(cfg, rngs)
    self.blocks = nnx.List([VisionBlock(cfg, rngs) for _ in range(cfg.depth)])
    self.merger = PatchMerger(cfg, rngs)

  def __call__(self, pixel_values: jax.Array, grid_thw) -> jax.Array:
    cfg = self.cfg
    grid = tuple(tuple(int(v) for v in row) for row in np.asarray(grid_thw).reshape(-1, 3))
    n = sum(t * h * w for t, h, w in grid)
    if pixel_values.shape[0] != n:
      raise ShapeError("pixel_values", tuple(pixel_values.shape), f"{n} patches (grid {grid})")
    window_index, hw, full_seg, window_seg, groups = vision_layout(
        grid, cfg.spatial_merge_size, cfg.window_size, cfg.patch_size)
    unit = cfg.spatial_merge_size ** 2
    x = self.patch_embed(pixel_values)
    x = x.reshape(n // unit, unit, -1)[window_index].reshape(groups, n // groups, -1)
    half = cfg.head_dim // 2
    inv = 1.0 / cfg.rope_theta ** (np.arange(0, half, 2, dtype=np.float32) / half)
    freqs = (hw[..., None] * inv).reshape(groups, n // groups, half)
    emb = jnp.asarray(np.concatenate([freqs, freqs], -1))
    cos, sin = jnp.cos(emb), jnp.sin(emb)
    seg_mask = lambda seg: jnp.asarray((seg[:, None, :, None] == seg[:, None, None, :]))
    full = seg_mask(full_seg.reshape(groups, -1))
    window = seg_mask(window_seg.reshape(groups, -1))
    for i, block in enumerate(self.blocks):
      x = block(x, cos, sin, full if i in cfg.fullatt_block_indexes else window)
    merged = self.merger(x.reshape(n, -1))
    return merged[np.argsort(window_index)]
