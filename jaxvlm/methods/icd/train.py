"""Policy training on the one :class:`jaxvlm.training.Trainer`: supervised -> RCE -> GRPO.

Inputs are CLIP embeddings (:class:`Episodes`: query embeddings, the pool's embeddings and each
query's K candidate pool indices). Each stage is a ``loss_fn`` + batch factory given to its own
``Trainer`` (the parameters carry over), saving an Orbax checkpoint per epoch with the run
config under ``<workdir>/<stage>/checkpoints`` (step = epoch x steps per epoch).

* supervised: CE of the best InfoScore beam's shots;
* RCE: CE over the M beams weighted by ``softmax(InfoScore / tau)``, tau annealed 2 -> 0.5;
* GRPO: per epoch, ``group_size`` sampled selections per query from the current policy
  (``old_logp``), their rewards from ``reward_fn`` (the VLM's exact match + VQA accuracy with
  those ICDs), the frozen post-RCE policy as reference (``ref_logp``); then steps of
  :func:`~jaxvlm.methods.icd.losses.grpo_loss` with KL_BETA fixed or adapted per epoch.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvlm.errors import MissingFileError
from jaxvlm.methods.icd import losses
from jaxvlm.methods.icd.policy import check_shots, decode, sequence_logp
from jaxvlm.training import TrainConfig, Trainer

RewardFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (query rows [M], icd idx [M, S])


@dataclasses.dataclass
class Episodes:
  """Policy inputs: ``query_emb [N, F]``, ``pool_emb [P, F]``, ``candidates [N, K]`` (pool idx)."""

  query_emb: np.ndarray
  pool_emb: np.ndarray
  candidates: np.ndarray

  def inputs(self, rows) -> dict[str, np.ndarray]:
    return {"query": self.query_emb[rows], "cands": self.pool_emb[self.candidates[rows]]}


def epoch_batches(n: int, batch_size: int, make: Callable[[np.ndarray, int], dict]):
  """``factory(seed, start)``: batches of ``batch_size`` rows in a fresh permutation per epoch
  (seeded by ``(seed, epoch)``), so batch ``step`` depends only on ``(seed, step)``."""
  per_epoch = max(n // batch_size, 1)

  def factory(seed, start):
    step = start
    while True:
      epoch, i = divmod(step, per_epoch)
      order = np.random.default_rng([seed, epoch]).permutation(n)
      yield make(order[i * batch_size:(i + 1) * batch_size], step)
      step += 1
  return factory, per_epoch


def supervised_loss_fn(model, batch, rng):
  del rng
  return losses.supervised_ce(sequence_logp(model, batch["query"], batch["cands"],
                                            batch["actions"]))


def rce_loss_fn(model, batch, rng):
  del rng
  b, m, s = batch["beams"].shape
  rep = lambda x: jnp.repeat(x, m, axis=0)
  logp = sequence_logp(model, rep(batch["query"]), rep(batch["cands"]),
                       batch["beams"].reshape(b * m, s)).sum(-1).reshape(b, m)
  return losses.rce_loss(logp, batch["rewards"], batch["tau"][0])


def make_grpo_loss_fn(group_size: int, clip: float = 0.2, adv_clip: float = 5.0):
  def loss_fn(model, batch, rng):
    del rng
    logp = sequence_logp(model, batch["query"], batch["cands"], batch["actions"]).sum(-1)
    return losses.grpo_loss(logp, batch["old_logp"], batch["ref_logp"], batch["rewards"],
                            group_size=group_size, clip=clip, kl_beta=batch["kl_beta"][0],
                            adv_clip=adv_clip)
  return loss_fn


@nnx.jit(static_argnames=("shots", "group_size"))
def rollouts(policy, ref, query, cands, rng, *, shots: int, group_size: int):
  """``group_size`` sampled selections per query: (actions, old_logp, ref_logp), rows grouped."""
  q, c = jnp.repeat(query, group_size, 0), jnp.repeat(cands, group_size, 0)
  actions = decode(policy, q, c, shots, rng)
  return (actions, sequence_logp(policy, q, c, actions).sum(-1),
          sequence_logp(ref, q, c, actions).sum(-1))


class PolicyTrainer:
  """Runs the three stages on one policy (see the module docstring)."""

  def __init__(self, policy: nnx.Module, optimizer: Mapping[str, Any], *, workdir: str,
               batch_size: int, shots: int, seed: int = 0, mesh=None,
               arch_config: Mapping[str, Any] | None = None,
               run_config: Mapping[str, Any] | None = None, progress: bool = True):
    self.policy, self.optimizer, self.workdir = policy, dict(optimizer), workdir
    self.batch_size, self.shots, self.seed, self.mesh = batch_size, shots, seed, mesh
    self.arch_config, self.run_config, self.progress = arch_config, run_config, progress
    self.history: dict[str, list[dict]] = {}

  def _trainer(self, stage: str, loss_fn, factory, steps: int, per_epoch: int) -> Trainer:
    return Trainer(self.policy, self.optimizer, loss_fn, factory, self.mesh,
                   config=TrainConfig(steps=steps, seed=self.seed, log_every=per_epoch,
                                      checkpoint_every=per_epoch, keep_checkpoints=10_000,
                                      progress=self.progress),
                   workdir=os.path.join(self.workdir, stage), arch_config=self.arch_config,
                   run_config=self.run_config)

  def steps_per_epoch(self, stage: str, n: int, group_size: int = 1) -> int:
    """Optimiser steps of one epoch over ``n`` queries (GRPO: ``group_size`` rollouts each)."""
    per_batch = max(self.batch_size // group_size, 1) if stage == "grpo" else self.batch_size
    return max(n // per_batch, 1)

  def load(self, stage: str, step: int) -> nnx.Module:
    """The policy of ``stage``'s checkpoint at ``step`` (epoch x :meth:`steps_per_epoch`)."""
    saved = os.path.join(self.workdir, stage, "checkpoints", str(step))
    if not os.path.isdir(saved):
      raise MissingFileError(saved, f"policy checkpoint of stage {stage!r} at step {step}")
    trainer = self._trainer(stage, supervised_loss_fn, lambda seed, start: iter(()), step, step)
    trainer.restore(step)
    return trainer.model

  def _run(self, stage, loss_fn, n, make, epochs) -> Trainer:
    factory, per_epoch = epoch_batches(n, self.batch_size, make)
    trainer = self._trainer(stage, loss_fn, factory, epochs * per_epoch, per_epoch)
    self.history[stage] = trainer.train(resume=True)
    self.policy = trainer.model
    return trainer

  def supervised(self, data: Episodes, beams: list[dict], epochs: int) -> None:
    best = np.array([b["beams"][0][:self.shots] for b in beams], np.int32)
    check_shots(best.shape[1], data.candidates.shape[1])
    self._run("supervised", supervised_loss_fn, len(best),
              lambda rows, step: {**data.inputs(rows), "actions": best[rows]}, epochs)

  def rce(self, data: Episodes, beams: list[dict], epochs: int, tau=(2.0, 0.5)) -> None:
    seqs = np.array([[s[:self.shots] for s in b["beams"]] for b in beams], np.int32)
    rewards = np.array([b["scores"] for b in beams], np.float32)
    total = epochs * max(len(seqs) // self.batch_size, 1)
    make = lambda rows, step: {
        **data.inputs(rows), "beams": seqs[rows], "rewards": rewards[rows],
        "tau": np.full(len(rows), float(losses.rce_tau(step, total, *tau)), np.float32)}
    self._run("rce", rce_loss_fn, len(seqs), make, epochs)

  def grpo(self, data: Episodes, reward_fn: RewardFn, epochs: int, *, group_size: int,
           kl_beta: float, clip: float = 0.2, adv_clip: float = 5.0,
           adaptive_kl_target: float | None = None, temperature: float = 1.0) -> list[dict]:
    """GRPO epochs; returns per-epoch records (mean reward, KL, KL_BETA used)."""
    losses.check_kl_beta(kl_beta)
    ref = nnx.clone(self.policy)
    adaptive = (losses.AdaptiveKL(kl_beta, adaptive_kl_target) if adaptive_kl_target else None)
    n = len(data.query_emb)
    buffer: dict[str, np.ndarray] = {}
    queries_per_batch = max(self.batch_size // group_size, 1)

    def make(rows, step):
      idx = (rows[:, None] * group_size + np.arange(group_size)).reshape(-1)
      return {**{k: v[idx] for k, v in buffer.items()}, "query": data.query_emb[rows].repeat(
          group_size, 0), "cands": data.pool_emb[data.candidates[rows]].repeat(group_size, 0)}

    factory, per_epoch = epoch_batches(n, queries_per_batch, make)
    trainer = self._trainer("grpo", make_grpo_loss_fn(group_size, clip, adv_clip), factory,
                            epochs * per_epoch, per_epoch)
    trainer.restore()
    records, beta = [], kl_beta
    for epoch in range(trainer.step // per_epoch, epochs):
      q = data.inputs(np.arange(n))
      actions, old, reflp = rollouts(trainer.model, ref, jnp.asarray(q["query"]),
                                     jnp.asarray(q["cands"]),
                                     jax.random.key(self.seed * 7919 + epoch), shots=self.shots,
                                     group_size=group_size)
      actions = np.asarray(actions)
      rows = np.repeat(np.arange(n), group_size)
      rewards = np.asarray(reward_fn(rows, data.candidates[rows[:, None], actions]), np.float32)
      buffer.update(actions=actions, old_logp=np.asarray(old), ref_logp=np.asarray(reflp),
                    rewards=rewards, kl_beta=np.full(len(rows), beta, np.float32))
      hist = trainer.train(stop_at=(epoch + 1) * per_epoch)
      kl = float(np.mean([h["kl"] for h in hist])) if hist else 0.0
      records.append({"epoch": epoch + 1, "reward": float(rewards.mean()), "kl": kl,
                      "kl_beta": beta})
      if adaptive:
        beta = adaptive.update(kl)
    self.policy = trainer.model
    self.history["grpo"] = records
    return records
