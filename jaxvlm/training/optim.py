"""AdamW with warm-up + cosine/linear/constant decay, global-norm clipping and a decay mask."""

from __future__ import annotations

from typing import Any, Mapping

import jax
import optax

from jaxvlm.errors import ConfigError

SCHEDULES = ("cosine", "linear", "constant")


def make_schedule(cfg: Mapping[str, Any], total_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 to ``lr`` over ``warmup_steps``, then the ``schedule`` decay to
  ``lr * end_lr_ratio`` at ``total_steps``."""
  lr, warmup = float(cfg["lr"]), int(cfg.get("warmup_steps", 0))
  end = lr * float(cfg.get("end_lr_ratio", 0.0))
  kind = cfg.get("schedule", "cosine")
  decay_steps = max(total_steps - warmup, 1)
  if kind == "cosine":
    decay = optax.cosine_decay_schedule(lr, decay_steps, alpha=end / lr if lr else 0.0)
  elif kind == "linear":
    decay = optax.linear_schedule(lr, end, decay_steps)
  elif kind == "constant":
    decay = optax.constant_schedule(lr)
  else:
    raise ConfigError("optimizer.schedule", kind, f"one of {SCHEDULES}")
  if warmup <= 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def decay_mask(params: Any) -> Any:
  """Weight decay on matrices only (ndim >= 2): norms, biases and scalars are not decayed."""
  return jax.tree.map(lambda x: x.ndim >= 2, params)


def make_optimizer(cfg: Mapping[str, Any], total_steps: int) -> optax.GradientTransformation:
  """``clip_by_global_norm(grad_clip)`` (if > 0) followed by masked AdamW on ``make_schedule``."""
  adamw = optax.adamw(make_schedule(cfg, total_steps), b1=float(cfg.get("b1", 0.9)),
                      b2=float(cfg.get("b2", 0.999)), eps=float(cfg.get("eps", 1e-8)),
                      weight_decay=float(cfg.get("weight_decay", 0.0)), mask=decay_mask)
  clip = float(cfg.get("grad_clip", 0.0))
  return optax.chain(optax.clip_by_global_norm(clip), adamw) if clip > 0 else adamw
