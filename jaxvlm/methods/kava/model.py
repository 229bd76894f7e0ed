"""The KAVA model: one causal LM (teacher and student) plus the latent projection.

``prj`` maps a latent's last hidden state to the next latent's input embedding: Linear -> GELU ->
Linear -> LayerNorm (``projection="mlp"``) or the identity. Its parameters are ``LatentParam``
(an ``nnx.Param`` subclass), so LoRA training selects ``nnx.Any(nnx.LoRAParam, LatentParam)``
and full fine-tuning ``nnx.Param`` (which includes them).
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import load_file, save

from jaxvlm.errors import CheckpointError, ConfigError
from jaxvlm.io import atomic_open, write_json
from jaxvlm.layers import lora
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


LATENT_FILE, KAVA_CONFIG = "kava_latent.safetensors", "kava_config.json"


def save_adapter(model: KavaModel, path: str, base_model_name_or_path: str = "") -> None:
  """Writes a trained KAVA LoRA model as a PEFT adapter folder that ``transformers`` + ``peft``
  load onto the base (``lora.save_adapter``: the LoRA factors and, when
  ``lora.train_special_embeddings`` trained them, the ``<bot>`` / ``<eot>`` / latent embedding
  rows as PEFT trainable tokens), plus beside it the latent projection ``prj`` in
  ``kava_latent.safetensors`` (float32, names ``w1 b1 w2 b2 scale bias``; none for the identity)
  and ``kava_config.json`` (projection kind and the three special token ids)."""
  lora.save_adapter(model.lm, path, base_model_name_or_path)
  prj = {k: np.asarray(v[...], np.float32) for k, v in vars(model.prj).items()
         if isinstance(v, LatentParam)}
  with atomic_open(os.path.join(path, LATENT_FILE), "wb") as f:
    f.write(save(prj, metadata={"format": "np"}))
  write_json(os.path.join(path, KAVA_CONFIG), {
      "projection": model.prj.kind, "bot_id": model.bot_id, "eot_id": model.eot_id,
      "latent_id": model.latent_id})


def load_adapter(lm: nnx.Module, path: str) -> KavaModel:
  """The ``KavaModel`` of a folder written by ``save_adapter`` on the base ``lm`` (changed in
  place: the adapter is added to it)."""
  config_path = os.path.join(path, KAVA_CONFIG)
  if not os.path.exists(config_path):
    raise CheckpointError(f"KAVA adapter: file {config_path!r} does not exist")
  with open(config_path) as f:
    cfg = json.load(f)
  lora.load_adapter(lm, path)
  model = KavaModel(lm, cfg["projection"], cfg["bot_id"], cfg["eot_id"], cfg["latent_id"])
  for name, value in load_file(os.path.join(path, LATENT_FILE)).items():
    getattr(model.prj, name)[...] = jnp.asarray(value)
  return model
