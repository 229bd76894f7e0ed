"""ICD training as Lever-Plus runs it: the static-query pointer policy, offline GRPO with the SFT
policy as old and reference policy, the adaptive KL band, per-stage learning rates, validation
losses per epoch and the epoch they select."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxvlm.errors import ConfigError
from jaxvlm.methods import icd


def test_static_query_step_two_depends_on_step_one_only_through_the_mask(rng):
  f, b, k = 10, 4, 6
  query, cands = jnp.asarray(rng.normal(size=(b, f))), jnp.asarray(rng.normal(size=(b, k, f)))
  static = icd.make_policy("pointer", f, seed=3, dim=16)
  first = jnp.zeros((b, 2), jnp.int32)
  second = first.at[:, 0].set(3)
  a, c = static.logits(query, cands, first)[:, 1], static.logits(query, cands, second)[:, 1]
  for row in range(b):
    keep = np.setdiff1d(np.arange(k), [0, 3])
    np.testing.assert_allclose(np.asarray(a[row, keep]), np.asarray(c[row, keep]), rtol=1e-6)
  assert float(a[0, 0]) < -1e8 and float(c[0, 3]) < -1e8  # the picked one is masked
  np.testing.assert_allclose(np.asarray(a[:, 3]), np.asarray(static.logits(query, cands, first)
                                                            [:, 0, 3]), rtol=1e-6)
  update = icd.make_policy("pointer", f, seed=3, dim=16, static_query=False)
  u1, u2 = update.logits(query, cands, first)[:, 1], update.logits(query, cands, second)[:, 1]
  assert not np.allclose(np.asarray(u1[:, 1:3]), np.asarray(u2[:, 1:3]))  # the state moved


def test_offline_grpo_step_at_the_sft_policy(rng):
  """old = reference = the current policy: KL 0 and the loss gradient equals the gradient of
  -mean(A * log pi) (the advantage-weighted log-probability gradient)."""
  n, g, k, s, f = 8, 4, 6, 2, 10
  policy = icd.make_policy("pointer", f, seed=0, dim=16)
  query = jnp.asarray(rng.normal(size=(n, f)), jnp.float32)
  cands = jnp.asarray(rng.normal(size=(n, k, f)), jnp.float32)
  actions = jnp.asarray(np.stack([rng.permutation(k)[:s] for _ in range(n)]), jnp.int32)
  rewards = jnp.asarray(rng.integers(0, 3, n), jnp.float32)
  sft = icd.sequence_logp(policy, query, cands, actions).sum(-1)

  def loss(model):
    logp = icd.sequence_logp(model, query, cands, actions).sum(-1)
    return icd.grpo_loss(logp, sft, sft, rewards, group_size=g, kl_beta=0.15)

  (value, metrics), grad = nnx.value_and_grad(loss, has_aux=True)(policy)
  assert float(metrics["kl"]) == pytest.approx(0.0, abs=1e-7)
  r = np.asarray(rewards).reshape(-1, g)
  adv = jnp.asarray(((r - r.mean(1, keepdims=True)) / (r.std(1, keepdims=True) + 1e-8))
                    .reshape(-1), jnp.float32)
  weighted = lambda model: -jnp.mean(adv * icd.sequence_logp(model, query, cands, actions).sum(-1))
  ref_grad = nnx.grad(weighted)(policy)
  for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(ref_grad)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)  # float32
  assert float(value) == pytest.approx(-float(jnp.mean(adv)), abs=1e-6)


def test_adaptive_kl_moves_beta_by_the_band_within_bounds():
  a = icd.AdaptiveKL(0.12)
  assert (a.kl_low, a.kl_high, a.beta_min, a.beta_max) == (0.01, 0.1, 0.001, 10.0)
  assert a.update(0.2) == pytest.approx(0.18)      # above the band: x1.5
  assert a.update(0.05) == pytest.approx(0.18)     # inside: unchanged
  assert a.update(0.001) == pytest.approx(0.12)    # below: /1.5
  betas = {0.12: icd.AdaptiveKL(0.12), 0.15: icd.AdaptiveKL(0.15)}
  for _ in range(3):  # two KL_BETA values stay distinct (no clamp of beta to 0.1)
    for b in betas.values():
      b.update(0.5)
  assert betas[0.12].beta != betas[0.15].beta
  for _ in range(40):
    betas[0.12].update(1.0)
    betas[0.15].update(0.0)
  assert betas[0.12].beta == 10.0 and betas[0.15].beta == 0.001
  with pytest.raises(ConfigError, match=r"train\.adaptive_kl\.band.*0\.2"):
    icd.AdaptiveKL(0.1, kl_low=0.2, kl_high=0.1)
  with pytest.raises(ConfigError, match="beta_bounds"):
    icd.AdaptiveKL(0.1, beta_min=1.0, beta_max=0.5)


def _episodes(rng, n, k=6, f=8, m=3, s=2):
  data = icd.Episodes(rng.normal(size=(n, f)).astype(np.float32),
                      rng.normal(size=(40, f)).astype(np.float32),
                      np.stack([rng.permutation(40)[:k] for _ in range(n)]))
  beams = [{"beams": [list(rng.permutation(k)[:s]) for _ in range(m)],
            "scores": sorted(rng.normal(size=m).tolist(), reverse=True)} for _ in range(n)]
  return data, beams


def test_stages_use_their_own_lr_and_record_validation_losses(tmp_path, rng):
  data, beams = _episodes(rng, 16)
  val, val_beams = _episodes(rng, 8)
  opt = {"lr": 1.0, "schedule": "constant"}

  def run(lr, folder):
    policy = icd.make_policy("pointer", 8, seed=0, dim=16)
    t = icd.PolicyTrainer(policy, opt, workdir=str(tmp_path / folder), batch_size=8, shots=2,
                          lr=lr, progress=False)
    t.set_validation(val, val_beams)
    before = icd.copy_policy(t.policy)
    t.supervised(data, beams, epochs=3)
    moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
        jax.tree.leaves(nnx.state(t.policy, nnx.Param)),
        jax.tree.leaves(nnx.state(before, nnx.Param))))
    return t, moved

  small, moved_small = run({"supervised": 1e-6}, "small")
  big, moved_big = run({"supervised": 1e-2}, "big")
  assert moved_small < 1e-5 < 1e-3 < moved_big  # Adam moves a weight by at most ~lr per step
  rows = big.curves("supervised", big.steps_per_epoch("supervised", 16))
  assert [r["epoch"] for r in rows] == [1, 2, 3]
  assert all(np.isfinite(r["loss"]) and np.isfinite(r["val_loss"]) for r in rows)
  best = big.best_epoch("supervised", 2)
  assert rows[best - 1]["val_loss"] == min(r["val_loss"] for r in rows)


def test_offline_grpo_uses_the_beams_and_adapts_beta(tmp_path, rng):
  data, beams = _episodes(rng, 16)
  policy = icd.make_policy("pointer", 8, seed=0, dim=16)
  t = icd.PolicyTrainer(policy, {"lr": 1e-3, "schedule": "constant"}, workdir=str(tmp_path),
                        batch_size=6, shots=2, progress=False)
  rewards = rng.integers(0, 3, (16, 3)).astype(np.float32)
  records = t.grpo(data, 2, kl_beta=0.12, sft=icd.copy_policy(policy), beams=beams,
                   beam_rewards=rewards, adaptive=icd.AdaptiveKL(0.12, kl_low=1.0, kl_high=2.0))
  assert [r["epoch"] for r in records] == [1, 2]
  assert records[0]["kl"] < 1.0 and records[1]["kl_beta"] == pytest.approx(0.08)  # below: /1.5
  assert records[0]["reward"] == pytest.approx(float(rewards.mean()))
  with pytest.raises(ConfigError, match="train.grpo_mode"):
    t.grpo(data, 1, kl_beta=0.1, mode="online")
