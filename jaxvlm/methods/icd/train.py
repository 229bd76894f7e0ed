"""Policy training on the one :class:`jaxvlm.training.Trainer`: supervised -> RCE -> GRPO.

Inputs are CLIP embeddings (:class:`Episodes`: query embeddings, the pool's embeddings and each
query's K candidate pool indices). Each stage is a ``loss_fn`` + batch factory given to its own
``Trainer`` with the stage's learning rate (``lr``; the other optimiser settings shared; the
parameters carry over), saving an Orbax checkpoint per epoch with the run config under
``<workdir>/<stage>/checkpoints`` (step = epoch x steps per epoch). After every epoch the
validation loss (Lever-Plus's: the RCE loss at tau = 1 over the held-out queries' beams) is
recorded; :meth:`PolicyTrainer.curves` gives per-epoch train loss, validation loss and the
stage's metrics (GRPO: KL, reward, KL_BETA), and :meth:`PolicyTrainer.best_epoch` the epoch of
lowest validation loss (how the seed's checkpoints were chosen).

* supervised: CE of the best InfoScore beam's shots;
* RCE: CE over the M beams weighted by ``softmax(InfoScore / tau)``, tau annealed 2 -> 0.5;
* GRPO, ``offline`` (Lever-Plus, the default): the groups are each query's InfoScore beams with
  their rewards (the VLM's exact match + VQA accuracy with those ICDs, computed once); the SFT
  policy (after the supervised stage) gives both ``old_logp`` and ``ref_logp``.
  ``on_policy``: per epoch ``group_size`` selections sampled from the current policy at
  ``temperature`` (``old_logp``), rewarded by the VLM, the policy at the start of GRPO as
  reference. Then steps of :func:`~jaxvlm.methods.icd.losses.grpo_loss`, KL_BETA fixed or adapted
  per epoch by :class:`~jaxvlm.methods.icd.losses.AdaptiveKL`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvlm import io
from jaxvlm.errors import ConfigError, MissingFileError
from jaxvlm.methods.icd import losses
from jaxvlm.methods.icd.policy import check_shots, decode, sequence_logp
from jaxvlm.training import TrainConfig, Trainer
from jaxvlm.training.metrics import read_metrics

GRPO_MODES = ("offline", "on_policy")
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
  return losses.rce_loss(rce_logp(model, batch), batch["rewards"], batch["tau"][0])


def rce_logp(model, batch):
  """``[B, M]`` sequence log-probabilities of every beam of a batch."""
  b, m, s = batch["beams"].shape
  rep = lambda x: jnp.repeat(x, m, axis=0)
  return sequence_logp(model, rep(batch["query"]), rep(batch["cands"]),
                       batch["beams"].reshape(b * m, s)).sum(-1).reshape(b, m)


def make_grpo_loss_fn(group_size: int, clip: float = 0.2, adv_clip: float = 5.0):
  def loss_fn(model, batch, rng):
    del rng
    logp = sequence_logp(model, batch["query"], batch["cands"], batch["actions"]).sum(-1)
    return losses.grpo_loss(logp, batch["old_logp"], batch["ref_logp"], batch["rewards"],
                            group_size=group_size, clip=clip, kl_beta=batch["kl_beta"][0],
                            adv_clip=adv_clip)
  return loss_fn


@nnx.jit(static_argnames=("shots", "group_size", "temperature"))
def rollouts(policy, ref, query, cands, rng, *, shots: int, group_size: int,
             temperature: float = 1.0):
  """``group_size`` selections per query sampled at ``temperature``: (actions, old_logp,
  ref_logp), rows grouped."""
  q, c = jnp.repeat(query, group_size, 0), jnp.repeat(cands, group_size, 0)
  actions = decode(policy, q, c, shots, rng, temperature)
  return (actions, sequence_logp(policy, q, c, actions).sum(-1),
          sequence_logp(ref, q, c, actions).sum(-1))


@nnx.jit
def _val_loss(model, batch):
  return losses.rce_loss(rce_logp(model, batch), batch["rewards"], 1.0)[0]


def copy_policy(policy: nnx.Module) -> nnx.Module:
  """A copy of ``policy`` with its own arrays (a Trainer donates the arrays it trains)."""
  graphdef, state = nnx.split(policy)
  return nnx.merge(graphdef, jax.tree.map(lambda x: jnp.array(x, copy=True), state))


def beam_arrays(beams: list[dict], shots: int) -> tuple[np.ndarray, np.ndarray]:
  """``(sequences [N, M, shots], InfoScores [N, M])`` of the beams of every query."""
  return (np.array([[s[:shots] for s in b["beams"]] for b in beams], np.int32),
          np.array([b["scores"] for b in beams], np.float32))


class PolicyTrainer:
  """Runs the three stages on one policy (see the module docstring)."""

  def __init__(self, policy: nnx.Module, optimizer: Mapping[str, Any], *, workdir: str,
               batch_size: int, shots: int, seed: int = 0, mesh=None,
               lr: Mapping[str, float] | None = None,
               arch_config: Mapping[str, Any] | None = None,
               run_config: Mapping[str, Any] | None = None, progress: bool = True):
    self.policy, self.optimizer, self.workdir = policy, dict(optimizer), workdir
    self.lr = dict(lr or {})
    self.batch_size, self.shots, self.seed, self.mesh = batch_size, shots, seed, mesh
    self.arch_config, self.run_config, self.progress = arch_config, run_config, progress
    self.val: Callable[[nnx.Module], float] | None = None

  def set_validation(self, data: "Episodes", beams: list[dict]) -> None:
    """Validation queries (``data`` rows) and their beams: after each epoch, the mean RCE loss
    at tau = 1 over them."""
    seqs, scores = beam_arrays(beams, self.shots)
    n = len(seqs)

    def val(model) -> float:
      out = []
      for s in range(0, n, self.batch_size):
        rows = np.arange(s, min(s + self.batch_size, n))
        out.append(float(_val_loss(model, {**data.inputs(rows), "beams": seqs[rows],
                                           "rewards": scores[rows]})) * len(rows))
      return sum(out) / n
    self.val = val if n else None

  def _trainer(self, stage: str, loss_fn, factory, steps: int, per_epoch: int) -> Trainer:
    optimizer = dict(self.optimizer, lr=self.lr.get(stage, self.optimizer["lr"]))
    eval_fn = (lambda model, step: {"val_loss": self.val(model)}) if self.val else None
    return Trainer(self.policy, optimizer, loss_fn, factory, self.mesh,
                   config=TrainConfig(steps=steps, seed=self.seed, log_every=1,
                                      eval_every=per_epoch, checkpoint_every=per_epoch,
                                      keep_checkpoints=10_000, progress=self.progress),
                   workdir=os.path.join(self.workdir, stage), eval_fn=eval_fn,
                   arch_config=self.arch_config, run_config=self.run_config)

  def steps_per_epoch(self, stage: str, n: int, group_size: int = 1) -> int:
    """Optimiser steps of one epoch over ``n`` queries (GRPO: ``group_size`` rows each)."""
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

  def curves(self, stage: str, per_epoch: int) -> list[dict]:
    """Per epoch: the mean of every logged training metric over its steps (``loss``, and for
    GRPO ``kl``, ``reward``, ...) and ``val_loss`` (read from the stage's ``metrics.jsonl``)."""
    path = os.path.join(self.workdir, stage, "metrics.jsonl")
    records = {r["step"]: r for r in read_metrics(path)} if os.path.exists(path) else {}
    epochs: dict[int, list[dict]] = {}
    for step, r in sorted(records.items()):
      epochs.setdefault((step - 1) // per_epoch + 1, []).append(r)
    out = []
    for epoch, rs in sorted(epochs.items()):
      keys = {k for r in rs for k in r if k not in ("step", "tokens_per_s")}
      row = {"epoch": epoch}
      for k in sorted(keys):
        vals = [r[k] for r in rs if k in r]
        row["val_loss" if k == "eval/val_loss" else k] = float(np.mean(vals))
      out.append(row)
    return out

  def best_epoch(self, stage: str, per_epoch: int) -> int:
    """The epoch of ``stage`` with the lowest validation loss."""
    rows = [r for r in self.curves(stage, per_epoch) if "val_loss" in r]
    if not rows:
      raise ConfigError("compare.epoch_selection", "val_loss",
                        f"validation losses of stage {stage!r} (no validation queries)")
    return min(rows, key=lambda r: r["val_loss"])["epoch"]

  def _run(self, stage, loss_fn, n, make, epochs) -> Trainer:
    factory, per_epoch = epoch_batches(n, self.batch_size, make)
    trainer = self._trainer(stage, loss_fn, factory, epochs * per_epoch, per_epoch)
    trainer.train(resume=True)
    self.policy = trainer.model
    return trainer

  def supervised(self, data: Episodes, beams: list[dict], epochs: int) -> None:
    best = np.array([b["beams"][0][:self.shots] for b in beams], np.int32)
    check_shots(best.shape[1], data.candidates.shape[1])
    self._run("supervised", supervised_loss_fn, len(best),
              lambda rows, step: {**data.inputs(rows), "actions": best[rows]}, epochs)

  def rce(self, data: Episodes, beams: list[dict], epochs: int, tau=(2.0, 0.5)) -> None:
    seqs, rewards = beam_arrays(beams, self.shots)
    total = epochs * max(len(seqs) // self.batch_size, 1)
    make = lambda rows, step: {
        **data.inputs(rows), "beams": seqs[rows], "rewards": rewards[rows],
        "tau": np.full(len(rows), float(losses.rce_tau(step, total, *tau)), np.float32)}
    self._run("rce", rce_loss_fn, len(seqs), make, epochs)

  def grpo(self, data: Episodes, epochs: int, *, kl_beta: float, mode: str = "offline",
           sft: nnx.Module | None = None, beams: list[dict] | None = None,
           beam_rewards: np.ndarray | None = None, reward_fn: RewardFn | None = None,
           group_size: int = 4, clip: float = 0.2, adv_clip: float = 5.0,
           adaptive: losses.AdaptiveKL | None = None, temperature: float = 1.0) -> list[dict]:
    """GRPO epochs (module docstring); ``offline`` needs ``sft``, ``beams`` and
    ``beam_rewards [N, M]``, ``on_policy`` needs ``reward_fn``. Returns per-epoch records
    (mean reward, KL, KL_BETA used), kept in ``grpo/records.json`` across resumes."""
    losses.check_kl_beta(kl_beta)
    if mode not in GRPO_MODES:
      raise ConfigError("train.grpo_mode", mode, f"one of {GRPO_MODES}")
    n = len(data.query_emb)
    buffer: dict[str, np.ndarray] = {}
    if mode == "offline":
      actions, _ = beam_arrays(beams, self.shots)
      group_size = actions.shape[1]
      q = data.inputs(np.arange(n))
      rep = lambda x: jnp.asarray(np.repeat(x, group_size, 0))
      flat = jnp.asarray(actions.reshape(n * group_size, -1))
      sft_logp = np.asarray(sequence_logp(sft, rep(q["query"]), rep(q["cands"]), flat).sum(-1))
      buffer.update(actions=np.asarray(flat), old_logp=sft_logp, ref_logp=sft_logp,
                    rewards=np.asarray(beam_rewards, np.float32).reshape(-1))
    ref = copy_policy(self.policy)
    queries_per_batch = max(self.batch_size // group_size, 1)

    def make(rows, step):
      idx = (rows[:, None] * group_size + np.arange(group_size)).reshape(-1)
      return {**{k: v[idx] for k, v in buffer.items()}, "query": data.query_emb[rows].repeat(
          group_size, 0), "cands": data.pool_emb[data.candidates[rows]].repeat(group_size, 0)}

    factory, per_epoch = epoch_batches(n, queries_per_batch, make)
    trainer = self._trainer("grpo", make_grpo_loss_fn(group_size, clip, adv_clip), factory,
                            epochs * per_epoch, per_epoch)
    trainer.restore()
    path = os.path.join(self.workdir, "grpo", "records.json")
    done = trainer.step // per_epoch
    records = [r for r in (json.load(open(path)) if os.path.exists(path) else [])
               if r["epoch"] <= done]
    beta = records[-1]["next_kl_beta"] if records else kl_beta
    if adaptive:
      adaptive.beta = beta
    for epoch in range(done, epochs):
      if mode == "on_policy":
        q = data.inputs(np.arange(n))
        acts, old, reflp = rollouts(trainer.model, ref, jnp.asarray(q["query"]),
                                    jnp.asarray(q["cands"]),
                                    jax.random.key(self.seed * 7919 + epoch), shots=self.shots,
                                    group_size=group_size, temperature=float(temperature))
        acts = np.asarray(acts)
        rows = np.repeat(np.arange(n), group_size)
        rewards = np.asarray(reward_fn(rows, data.candidates[rows[:, None], acts]), np.float32)
        buffer.update(actions=acts, old_logp=np.asarray(old), ref_logp=np.asarray(reflp),
                      rewards=rewards)
      buffer["kl_beta"] = np.full(n * group_size, beta, np.float32)
      hist = trainer.train(stop_at=(epoch + 1) * per_epoch)
      kl = float(np.mean([h["kl"] for h in hist if "kl" in h])) if hist else 0.0
      record = {"epoch": epoch + 1, "reward": float(buffer["rewards"].mean()), "kl": kl,
                "kl_beta": beta}
      if adaptive:
        beta = adaptive.update(kl)
      records.append(dict(record, next_kl_beta=beta))
      io.write_json(path, records)
    self.policy = trainer.model
    return records
