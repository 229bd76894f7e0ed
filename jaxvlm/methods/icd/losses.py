"""Policy losses: GRPO with KL to a reference policy, RCE, supervised CE (+ the schedules).

All take per-sequence (or per-shot) log-probabilities from
:func:`jaxvlm.methods.icd.policy.sequence_logp` and return ``(loss, metrics)``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxvlm.errors import ConfigError


def check_kl_beta(kl_beta) -> None:
  if isinstance(kl_beta, (int, float)) and not kl_beta >= 0:
    raise ConfigError("kl_beta", kl_beta, "a value >= 0 (KL_BETA weights the KL penalty)")


def grpo_loss(logp, old_logp, ref_logp, rewards, *, group_size: int, clip: float = 0.2,
              kl_beta=0.1, adv_clip: float = 5.0):
  """GRPO over groups of ``group_size`` consecutive samples (all arrays ``[N]``).

  Advantage ``A = clip((r - mean_g r) / (std_g r + 1e-8), ±adv_clip)`` (population std per
  group); ``ratio = exp(logp - old_logp)``; ``KL = mean(exp(ref - logp) - (ref - logp) - 1)``;
  ``loss = -mean(min(ratio A, clip(ratio, 1 ± clip) A)) + kl_beta KL``.
  """
  check_kl_beta(kl_beta)
  n = logp.shape[0]
  if group_size < 1 or n % group_size:
    raise ConfigError("group_size", group_size, f"a divisor >= 1 of the batch size {n}")
  r = rewards.astype(jnp.float32).reshape(-1, group_size)
  adv = (r - r.mean(-1, keepdims=True)) / (r.std(-1, keepdims=True) + 1e-8)
  adv = jnp.clip(adv, -adv_clip, adv_clip).reshape(n)
  old_logp, ref_logp = jax.lax.stop_gradient(old_logp), jax.lax.stop_gradient(ref_logp)
  ratio = jnp.exp(logp - old_logp)
  surrogate = jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - clip, 1 + clip) * adv)
  policy_loss = -surrogate.mean()
  d = ref_logp - logp
  kl = jnp.mean(jnp.exp(d) - d - 1)
  loss = policy_loss + kl_beta * kl
  return loss, {"policy_loss": policy_loss, "kl": kl, "reward": r.mean(),
                "clip_fraction": jnp.mean(jnp.abs(ratio - 1) > clip), "ratio": ratio.mean()}


@dataclasses.dataclass
class AdaptiveKL:
  """KL_BETA adapted towards a target KL after each epoch: x1.5 when KL > 1.5 target, /1.5 when
  KL < target / 1.5, kept within ``[low, high]`` (0.01 .. 0.1 as in Lever-Plus)."""

  beta: float
  target: float
  low: float = 0.01
  high: float = 0.1

  def update(self, kl: float) -> float:
    if kl > 1.5 * self.target:
      self.beta *= 1.5
    elif kl < self.target / 1.5:
      self.beta /= 1.5
    self.beta = float(min(max(self.beta, self.low), self.high))
    return self.beta


def rce_loss(logp, rewards, tau):
  """Reward-weighted CE over M beams per query: ``logp, rewards [B, M]`` (sequence
  log-probabilities and beam rewards); ``loss = -mean_b sum_m softmax(rewards / tau)_m logp_m``."""
  w = jax.lax.stop_gradient(jax.nn.softmax(rewards.astype(jnp.float32) / tau, axis=-1))
  loss = -jnp.mean(jnp.sum(w * logp, axis=-1))
  return loss, {"rce_weight_max": w.max(-1).mean(), "tau": jnp.asarray(tau, jnp.float32)}


def rce_tau(step, total_steps: int, start: float = 2.0, end: float = 0.5):
  """Temperature annealed linearly from ``start`` to ``end`` over ``total_steps``."""
  frac = jnp.clip(step / max(total_steps - 1, 1), 0.0, 1.0)
  return start + (end - start) * frac


def supervised_ce(logp):
  """CE of the best beam: ``logp [B, S]`` per-shot log-probabilities; mean over shots and B."""
  return -jnp.mean(logp), {}
