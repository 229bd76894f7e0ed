"""Exact-k selection: repeated masked Gumbel-softmax (training) and plain top-k (inference)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxvlm.errors import ConfigError


def _counts(logits: jax.Array, k) -> jax.Array:
  """``k`` (int or int array broadcastable to ``logits.shape[:-1]``) -> int32 counts."""
  n = logits.shape[-1]
  if isinstance(k, int) and not 0 <= k <= n:
    raise ConfigError("k", k, f"an int in [0, {n}] (the number of choices)")
  return jnp.broadcast_to(jnp.asarray(k, jnp.int32), logits.shape[:-1])


def gumbel_topk(logits: jax.Array, k, tau: float = 5.0, rng: jax.Array | None = None, *,
                hard: bool = True) -> jax.Array:
  """Picks exactly ``k`` of the ``n`` choices per row by ``k`` rounds of masked Gumbel-softmax.

  Round ``t`` draws fresh Gumbel noise, takes ``softmax((logits + g) / tau)`` over the choices not
  picked yet and, for rows with ``t < k``, picks its argmax. ``hard=True`` returns the ``{0, 1}``
  mask ``[..., n]`` (exactly ``k`` ones per row; ``k`` may differ per row, 0..n) with the
  straight-through gradient of the summed soft weights; ``hard=False`` returns those soft weights
  (each row sums to ``k``). ``rng=None`` drops the noise (deterministic soft top-k).
  """
  if tau <= 0:
    raise ConfigError("tau", tau, "a temperature > 0")
  return _gumbel_topk(logits, _counts(logits, k), float(tau), rng, hard)


@functools.partial(jax.jit, static_argnums=(2, 4))
def _gumbel_topk(logits, counts, tau, rng, hard):
  n = logits.shape[-1]
  z = logits.astype(jnp.float32)
  noise_keys = jax.random.split(rng, n) if rng is not None else None

  def body(t, carry):
    picked, soft = carry
    g = (jax.random.gumbel(noise_keys[t], z.shape) if noise_keys is not None
         else jnp.zeros_like(z))
    y = jax.nn.softmax(jnp.where(picked > 0, -jnp.inf, (z + g) / tau), axis=-1)
    active = (t < counts)[..., None].astype(z.dtype)
    one_hot = jax.nn.one_hot(jnp.argmax(y, axis=-1), n, dtype=z.dtype)
    return picked + active * one_hot, soft + active * y

  zeros = jnp.zeros_like(z)
  picked, soft = jax.lax.fori_loop(0, n, body, (zeros, zeros))
  if not hard:
    return soft
  return picked + (soft - jax.lax.stop_gradient(soft))  # exact {0, 1} values


def topk_mask(logits: jax.Array, k) -> jax.Array:
  """Deterministic ``{0, 1}`` mask of the ``k`` largest logits per row (ties: lower index)."""
  counts = _counts(logits, k)
  rank = jnp.argsort(jnp.argsort(-logits.astype(jnp.float32), axis=-1, stable=True), axis=-1)
  return (rank < counts[..., None]).astype(jnp.float32)
