"""Rotary position embeddings: inverse frequencies (default, linear, llama3 scaling) and rotation.

``rope_cos_sin`` returns HF-layout tables ``[B, S, D]`` (the two halves repeated), which
``apply_rope`` applies with ``rotate_half`` exactly as ``transformers`` does. Multimodal RoPE
variants (M-RoPE) build their own tables and pass them to the decoder.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxvlm.errors import ConfigError


def inv_frequencies(head_dim: int, theta: float, scaling: Mapping[str, Any] | None = None,
                    partial_rotary_factor: float = 1.0) -> tuple[np.ndarray, float]:
  """Returns (inverse frequencies ``[dim/2]`` float32, attention scaling) for a rope config."""
  dim = int(head_dim * partial_rotary_factor)
  inv = (1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim)))
  inv = inv.astype(np.float32)
  rope_type = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
  if rope_type == "default":
    return inv, 1.0
  if rope_type == "linear":
    return (inv / np.float32(scaling["factor"])).astype(np.float32), 1.0
  if rope_type == "llama3":
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv
    scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32), 1.0
  raise ConfigError("rope_scaling.rope_type", rope_type, "one of 'default', 'linear', 'llama3'")


def rope_cos_sin(position_ids: jax.Array, inv_freq: np.ndarray, scaling: float = 1.0,
                 dtype=jnp.float32) -> tuple[jax.Array, jax.Array]:
  """cos/sin tables ``[B, S, 2*len(inv_freq)]`` for integer ``position_ids [B, S]``."""
  freqs = position_ids.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return (jnp.cos(emb) * scaling).astype(dtype), (jnp.sin(emb) * scaling).astype(dtype)


def rotate_half(x: jax.Array) -> jax.Array:
  x1, x2 = jnp.split(x, 2, axis=-1)
  return jnp.concatenate([-x2, x1], axis=-1)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates ``x [B, S, H, D]`` with tables ``[B, S, D_rot]`` (partial rotary: first D_rot dims)."""
  d_rot = cos.shape[-1]
  cos, sin = cos[:, :, None, :].astype(x.dtype), sin[:, :, None, :].astype(x.dtype)
  x_rot, x_pass = x[..., :d_rot], x[..., d_rot:]
  out = x_rot * cos + rotate_half(x_rot) * sin
  return jnp.concatenate([out, x_pass], axis=-1) if x_pass.shape[-1] else out
