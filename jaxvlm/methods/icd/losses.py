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
  group); ``ratio = exp(logp - old_logp)``; Lever-Plus's KL to the reference policy,
  ``KL = mean(r - 1 - log r)`` with ``r = exp(logp - ref_logp)``;
  ``loss = -mean(min(ratio A, clip(ratio, 1 ± clip) A)) + kl_beta KL``. Offline GRPO (Lever-Plus)
  passes the SFT policy's log-probabilities as both ``old_logp`` and ``ref_logp``.
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
  d = logp - ref_logp
  kl = jnp.mean(jnp.exp(d) - 1 - d)
  loss = policy_loss + kl_beta * kl
  return loss, {"policy_loss": policy_loss, "kl": kl, "reward": r.mean(),
                "clip_fraction": jnp.mean(jnp.abs(ratio - 1) > clip), "ratio": ratio.mean()}


@dataclasses.dataclass
class AdaptiveKL:
  """Lever-Plus's adaptive KL_BETA: ``beta x factor`` when the KL is above the target band
  ``[kl_low, kl_high]``, ``beta / factor`` when below, unchanged inside; ``beta`` stays within
  ``[beta_min, beta_max]`` (defaults: band 0.01-0.1, factor 1.5, beta 0.001-10)."""

  beta: float
  kl_low: float = 0.01
  kl_high: float = 0.1
  factor: float = 1.5
  beta_min: float = 0.001
  beta_max: float = 10.0

  def __post_init__(self):
    check_kl_beta(self.beta)
    if not 0 <= self.kl_low <= self.kl_high:
      raise ConfigError("train.adaptive_kl.band", (self.kl_low, self.kl_high),
                        "a KL band (low, high) with 0 <= low <= high")
    if not 0 < self.beta_min <= self.beta_max:
      raise ConfigError("train.adaptive_kl.beta_bounds", (self.beta_min, self.beta_max),
                        "beta bounds (min, max) with 0 < min <= max")
    if not self.factor > 1:
      raise ConfigError("train.adaptive_kl.factor", self.factor, "a factor > 1")

  def update(self, kl: float) -> float:
    if kl > self.kl_high:
      self.beta *= self.factor
    elif kl < self.kl_low:
      self.beta /= self.factor
    self.beta = float(min(max(self.beta, self.beta_min), self.beta_max))
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
