"""KAVA loss terms: masked cross-entropy, the CODI hidden-state loss and the KV distillation loss.

Distances (elementwise, then averaged): ``l1`` ``|x|``; ``smooth_l1`` (Huber with beta 1, as
``torch.nn.SmoothL1Loss``) ``0.5 x^2`` if ``|x| < 1`` else ``|x| - 0.5``; ``mse`` ``x^2``.
Layer-wise std normalisation (``NORMALIZE``), with ``s`` the standard deviation of the teacher's
(target's) tensor of that layer over all its elements:

* ``loss`` (CODI's code, ``zhenyi4/codi`` ``distill_loss_div_std``): the layer's mean distance is
  divided by ``s`` (``mse``: by ``s`` twice), ``s`` with Bessel's correction as ``torch.std``;
* ``diff``: the difference is divided by ``s`` (population std) before the distance; for ``l1``
  and ``mse`` this equals ``loss`` up to the std estimator, for ``smooth_l1`` it does not;
* ``none``: raw distances.

Targets are always under ``stop_gradient``.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import optax

from jaxvlm.errors import ConfigError

DISTANCES = ("l1", "smooth_l1", "mse")
NORMALIZE = ("loss", "diff", "none")


def distance(x: jax.Array, kind: str) -> jax.Array:
  """Elementwise distance of the difference ``x`` (see the module docstring)."""
  if kind not in DISTANCES:
    raise ConfigError("kava.distance", kind, f"one of {DISTANCES}")
  a = jnp.abs(x)
  if kind == "l1":
    return a
  if kind == "mse":
    return x * x
  return jnp.where(a < 1.0, 0.5 * x * x, a - 0.5)


def layer_distance(target: jax.Array, student: jax.Array, kind: str, mode: str) -> jax.Array:
  """Mean distance between ``sg(target)`` and ``student`` of one layer (any equal shapes), std
  normalisation ``mode`` one of ``NORMALIZE``."""
  if mode not in NORMALIZE:
    raise ConfigError("kava.codi_normalize", mode, f"one of {NORMALIZE}")
  target = jax.lax.stop_gradient(target.astype(jnp.float32))
  diff = target - student.astype(jnp.float32)
  if mode == "diff":
    diff = diff / (jnp.std(target) + 1e-6)
  loss = distance(diff, kind).mean()
  if mode == "loss":
    s = jnp.std(target, ddof=1) + 1e-6
    loss = loss / (s * s if kind == "mse" else s)
  return loss


def codi_loss(teacher_hidden: Sequence[jax.Array], student_hidden: Sequence[jax.Array],
              kind: str = "smooth_l1", normalize: str = "loss") -> jax.Array:
  """Mean over layers of the distance between teacher and student hidden states ``[B, H]`` at the
  compared position."""
  return jnp.mean(jnp.stack([layer_distance(t, s, kind, normalize)
                             for t, s in zip(teacher_hidden, student_hidden)]))


def kv_loss(teacher_k: Sequence[jax.Array], teacher_v: Sequence[jax.Array],
            student_k: Sequence[jax.Array], student_v: Sequence[jax.Array],
            kind: str = "smooth_l1", normalize: bool = True) -> jax.Array:
  """``(d(K) + d(V)) / 2`` with ``d`` the mean over layers of the per-layer mean distance between
  the compressed teacher cache and the student's latent cache (``[B, M, Hkv, D]`` per layer);
  ``normalize`` divides each difference by its target's std (mode ``diff``)."""
  mode = "diff" if normalize else "none"
  d = lambda ts, ss: jnp.mean(jnp.stack([layer_distance(t, s, kind, mode)
                                         for t, s in zip(ts, ss)]))
  return 0.5 * (d(teacher_k, student_k) + d(teacher_v, student_v))


def masked_ce(logits: jax.Array, targets: jax.Array, weight: jax.Array) -> tuple[jax.Array,
                                                                                 jax.Array]:
  """(mean CE, token accuracy) of ``logits [B, S, V]`` predicting ``targets [B, S]`` where
  ``weight`` is 1."""
  logits = logits.astype(jnp.float32)
  w = weight.astype(jnp.float32)
  count = jnp.maximum(w.sum(), 1.0)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  acc = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
  return (ce * w).sum() / count, (acc * w).sum() / count
