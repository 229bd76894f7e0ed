"""Dense, embedding and normalisation layers with logical-axis metadata and separate dtypes.

Parameters are stored in ``param_dtype`` and cast to ``dtype`` (the compute dtype) on use.
Kernels are ``[in, out]`` (HF ``nn.Linear.weight`` transposed).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

Axes = tuple[str | None, ...]
Cut = Callable[[jax.Array, int], jax.Array]  # (array, axis) -> the array with that axis cut


def cut(x: jax.Array, fn: Cut | None, axis: int) -> jax.Array:
  """``fn(x, axis)``, or ``x`` when ``fn`` is None."""
  return x if fn is None else fn(x, axis)


def param(rngs: nnx.Rngs | None, init, shape, param_dtype, logical_axes: Axes) -> nnx.Param:
  """Creates an ``nnx.Param`` with ``logical_axes`` metadata (zeros when ``rngs`` is None)."""
  if rngs is None:
    value = jnp.zeros(shape, param_dtype)
  else:
    value = init(rngs.params(), shape, param_dtype)
  return nnx.Param(value, logical_axes=tuple(logical_axes))


class Linear(nnx.Module):
  """``y = x @ kernel (+ bias)`` with kernel ``[in, out]``."""

  def __init__(self, in_features: int, out_features: int, *, use_bias: bool = False,
               logical_axes: Axes = (None, None), dtype=jnp.float32, param_dtype=jnp.float32,
               rngs: nnx.Rngs, init_std: float = 0.02):
    self.in_features, self.out_features = in_features, out_features
    self.dtype = dtype
    self.kernel = param(rngs, nnx.initializers.normal(init_std), (in_features, out_features),
                        param_dtype, logical_axes)
    self.bias = (param(rngs, nnx.initializers.zeros, (out_features,), param_dtype,
                       logical_axes[1:]) if use_bias else None)

  def __call__(self, x: jax.Array, *, cut_in: Cut | None = None, cut_out: Cut | None = None,
               bias_scale: jax.Array | None = None) -> jax.Array:
    """``x @ kernel (+ bias)``. ``cut_in`` / ``cut_out`` restrict the layer to some inputs /
    outputs: the kernel's rows / columns are cut (``cut_out`` cuts the bias too; with ``cut_in``,
    ``x`` holds only the kept features). ``bias_scale`` multiplies the bias (per-row gates)."""
    kernel = cut(cut(self.kernel[...], cut_in, 0), cut_out, 1)
    y = jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))
    if self.bias is not None:
      bias = cut(self.bias[...], cut_out, 0).astype(self.dtype)
      y = y + (bias if bias_scale is None else bias_scale.astype(self.dtype) * bias)
    return y


class Embed(nnx.Module):
  """Token embedding ``[vocab, dim]``; ``attend`` gives tied output logits."""

  def __init__(self, num_embeddings: int, features: int, *, dtype=jnp.float32,
               param_dtype=jnp.float32, rngs: nnx.Rngs, init_std: float = 0.02):
    self.dtype = dtype
    self.embedding = param(rngs, nnx.initializers.normal(init_std), (num_embeddings, features),
                           param_dtype, ("vocab", "embed"))

  def __call__(self, ids: jax.Array) -> jax.Array:
    return jnp.take(self.embedding[...], ids, axis=0).astype(self.dtype)

  def attend(self, x: jax.Array) -> jax.Array:
    return jnp.dot(x.astype(self.dtype), self.embedding[...].astype(self.dtype).T)


class RMSNorm(nnx.Module):
  """``weight * (x / rms(x))`` with the statistics in float32 (HF LlamaRMSNorm semantics)."""

  def __init__(self, dim: int, *, eps: float = 1e-6, dtype=jnp.float32, param_dtype=jnp.float32,
               rngs: nnx.Rngs | None = None):
    self.eps, self.dtype = eps, dtype
    self.weight = nnx.Param(jnp.ones((dim,), param_dtype), logical_axes=("norm",))

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return self.weight[...].astype(self.dtype) * x32.astype(self.dtype)


class LayerNorm(nnx.Module):
  """LayerNorm with float32 statistics, optional bias."""

  def __init__(self, dim: int, *, eps: float = 1e-5, use_bias: bool = True, dtype=jnp.float32,
               param_dtype=jnp.float32, rngs: nnx.Rngs | None = None):
    self.eps, self.dtype = eps, dtype
    self.weight = nnx.Param(jnp.ones((dim,), param_dtype), logical_axes=("norm",))
    self.bias = (nnx.Param(jnp.zeros((dim,), param_dtype), logical_axes=("norm",))
                 if use_bias else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.eps) * self.weight[...].astype(jnp.float32)
    if self.bias is not None:
      y = y + self.bias[...].astype(jnp.float32)
    return y.astype(self.dtype)
