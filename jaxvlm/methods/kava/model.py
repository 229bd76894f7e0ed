"""The KAVA model: one causal LM (teacher and student) plus the latent projection.

``prj`` maps a latent's last hidden state to the next latent's input embedding: Linear -> GELU ->
Linear -> LayerNorm (``projection="mlp"``) or the identity. Its parameters are ``LatentParam``
(an ``nnx.Param`` subclass), so LoRA training selects ``nnx.Any(nnx.LoRAParam, LatentParam)``
and full fine-tuning ``nnx.Param`` (which includes them).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvlm.errors import ConfigError
from jaxvlm.models.llama.modeling import as_dtype

PROJECTIONS = ("mlp", "identity")


class LatentParam(nnx.Param):
  """A parameter of the latent machinery (trained in LoRA mode too)."""


class Projection(nnx.Module):
  """Linear -> GELU -> Linear -> LayerNorm on the hidden size (or the identity)."""

  def __init__(self, hidden: int, kind: str, dtype, *, rngs: nnx.Rngs):
    if kind not in PROJECTIONS:
      raise ConfigError("kava.projection", kind, f"one of {PROJECTIONS}")
    self.kind, self.dtype = kind, dtype
    if kind == "identity":
      return
    init = nnx.initializers.lecun_normal()
    p = lambda value, axes: LatentParam(value, logical_axes=axes)
    self.w1 = p(init(rngs.params(), (hidden, hidden), jnp.float32), ("embed", None))
    self.b1 = p(jnp.zeros((hidden,), jnp.float32), (None,))
    self.w2 = p(init(rngs.params(), (hidden, hidden), jnp.float32), (None, "embed"))
    self.b2 = p(jnp.zeros((hidden,), jnp.float32), ("norm",))
    self.scale = p(jnp.ones((hidden,), jnp.float32), ("norm",))
    self.bias = p(jnp.zeros((hidden,), jnp.float32), ("norm",))

  def __call__(self, h: jax.Array) -> jax.Array:
    if self.kind == "identity":
      return h
    dt = self.dtype
    x = jax.nn.gelu(h.astype(dt) @ self.w1[...].astype(dt) + self.b1[...].astype(dt))
    x = (x @ self.w2[...].astype(dt) + self.b2[...].astype(dt)).astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    x = (x - mean) * jax.lax.rsqrt(var + 1e-5) * self.scale[...] + self.bias[...]
    return x.astype(dt)


class KavaModel(nnx.Module):
  """``lm`` (a LLaMA/Qwen2 causal LM), ``prj`` and the ids of ``<bot>``, ``<eot>`` and the latent
  placeholder token."""

  def __init__(self, lm: nnx.Module, projection: str, bot_id: int, eot_id: int, latent_id: int,
               seed: int = 0):
    self.lm = lm
    self.prj = Projection(lm.config.hidden_size, projection, as_dtype(lm.config.dtype),
                          rngs=nnx.Rngs(seed))
    self.bot_id, self.eot_id, self.latent_id = int(bot_id), int(eot_id), int(latent_id)

  @property
  def config(self):
    return self.lm.config

  def embed(self, ids: jax.Array) -> jax.Array:
    return self.lm.model.embed_tokens(jnp.asarray(ids))
