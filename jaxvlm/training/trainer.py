"""A generic sharded trainer: a method supplies ``loss_fn`` and a batch iterator factory.

``loss_fn(model, batch, rng) -> (loss, aux)`` computes a scalar loss (and a dict of scalar
metrics) for one micro-batch; ``batch_iterator_factory(seed, start_step)`` yields global batches
(pytrees of numpy arrays with a leading batch axis) starting at ``start_step``, so the data order
is a function of (seed, step) and resuming needs only the step; in a multi-process run
(``jax.distributed``) every process yields the same global batch and feeds its own devices' rows.
The train step is one ``jit``: ``grad_accum`` micro-batches are scanned, gradients averaged,
clipped and applied with AdamW to the parameters selected by ``trainable`` (``nnx.Param`` for
full fine-tuning, ``nnx.LoRAParam`` for LoRA: the optimiser state then holds only those).
Parameters stay in their ``param_dtype`` (float32 master weights) while the model computes in its
``dtype`` (e.g. bfloat16).

The step donates the parameter and optimiser buffers: after the first step, read the model
through ``trainer.model`` (the module passed in holds the donated arrays).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from tqdm.auto import tqdm

from jaxvlm.errors import ConfigError
from jaxvlm.sharding.logical import LOGICAL_RULES_FSDP, Rules, use_mesh_rules
from jaxvlm.sharding.mesh import param_spec, shard_state
from jaxvlm.training.checkpoint import Checkpointer, flatten, unflatten
from jaxvlm.training.metrics import MetricsWriter
from jaxvlm.training.optim import make_optimizer

LossFn = Callable[[nnx.Module, Any, jax.Array], tuple[jax.Array, Mapping[str, jax.Array]]]
BatchFactory = Callable[[int, int], Iterator[Any]]
EvalFn = Callable[[nnx.Module, int], Mapping[str, float]]


@dataclasses.dataclass
class TrainConfig:
  """Loop settings (the optimiser has its own mapping, see ``make_optimizer``)."""
  steps: int
  seed: int = 0
  grad_accum: int = 1
  log_every: int = 10
  eval_every: int = 0
  checkpoint_every: int = 0
  keep_checkpoints: int = 3
  progress: bool = True


def _default_tokens(batch: Any) -> int:
  if isinstance(batch, Mapping) and "attention_mask" in batch:
    return int(np.sum(batch["attention_mask"]))
  if isinstance(batch, Mapping) and "input_ids" in batch:
    return int(np.size(batch["input_ids"]))
  return 0


class Trainer:
  """Owns the split model state, the optimiser state and the loop; see the module docstring."""

  def __init__(self, model: nnx.Module, optimizer_config: Mapping[str, Any], loss_fn: LossFn,
               batch_iterator_factory: BatchFactory, mesh: Mesh | None = None, *,
               config: TrainConfig, rules: Rules = LOGICAL_RULES_FSDP, trainable: Any = nnx.Param,
               workdir: str | None = None, eval_fn: EvalFn | None = None,
               arch_config: Mapping[str, Any] | None = None,
               run_config: Mapping[str, Any] | None = None,
               tokens_fn: Callable[[Any], int] = _default_tokens):
    if config.grad_accum < 1:
      raise ConfigError("train.grad_accum", config.grad_accum, "an int >= 1")
    self.config, self.mesh, self.rules = config, mesh, rules
    self.loss_fn, self.batches, self.eval_fn, self.tokens_fn = (
        loss_fn, batch_iterator_factory, eval_fn, tokens_fn)
    self.arch_config, self.run_config, self.workdir = arch_config, run_config, workdir
    model.train()
    self.graphdef, self.params, self.frozen, self.rest = nnx.split(model, trainable, nnx.Param, ...)
    if mesh is not None:  # a no-op for parameters born sharded; places e.g. fresh LoRA adapters
      self.params, self.frozen = (shard_state(s, mesh, rules) for s in (self.params, self.frozen))
    if not jax.tree.leaves(self.params):
      raise ConfigError("trainable", trainable, "a filter that selects at least one parameter")
    self.tx = make_optimizer(optimizer_config, config.steps)
    self.opt_state = self._init_opt_state()
    self.base_key = jax.random.key(config.seed)
    self.step = 0
    self._step_fn = jax.jit(self._train_step, donate_argnums=(0, 1))
    self.checkpointer = (Checkpointer(os.path.join(workdir, "checkpoints"),
                                      config.checkpoint_every, config.keep_checkpoints)
                         if workdir else None)

  # ----- state -------------------------------------------------------------------------------
  def _init_opt_state(self):
    """Optimiser state born sharded: moments like their parameter, the rest replicated."""
    if self.mesh is None:
      return self.tx.init(self.params)
    replicated = NamedSharding(self.mesh, jax.sharding.PartitionSpec())
    shardings = optax.tree_map_params(
        self.tx, lambda _, s: s, jax.eval_shape(self.tx.init, self.params),
        jax.tree.map(lambda x: x.sharding, self.params),
        transform_non_params=lambda _: replicated)
    return jax.jit(self.tx.init, out_shardings=shardings)(self.params)

  @property
  def model(self) -> nnx.Module:
    """The current model (sharing the trainer's arrays), in eval mode."""
    model = nnx.merge(self.graphdef, self.params, self.frozen, self.rest)
    model.eval()
    return model

  def checkpoint_state(self) -> dict:
    params, _ = flatten((self.params, self.frozen))
    params = {k.split(".", 1)[1]: v for k, v in params.items()}
    opt, _ = flatten(self.opt_state)
    # The key as host numpy: a single-device array cannot be saved by several processes.
    rng = np.asarray(jax.random.key_data(self.base_key))
    return {"params": params, "opt_state": opt, "rng": rng}

  def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
    p_named, p_def = flatten(self.params)
    f_named, f_def = flatten(self.frozen)
    self.params = unflatten(p_def, state["params"], p_named)
    self.frozen = unflatten(f_def, state["params"], f_named)
    o_named, o_def = flatten(self.opt_state)
    self.opt_state = unflatten(o_def, state["opt_state"], o_named)
    self.base_key = jax.random.wrap_key_data(state["rng"])

  def save(self, force: bool = False) -> None:
    if self.checkpointer is None:
      return
    meta = {"step": self.step, "data_position": self.step, "seed": self.config.seed,
            "arch_config": dict(self.arch_config or {}), "run_config": dict(self.run_config or {})}
    self.checkpointer.save(self.step, self.checkpoint_state(), meta, force=force)

  def restore(self, step: int | None = None) -> bool:
    """Restores ``step`` (default the latest complete one); False when there is none."""
    if self.checkpointer is None:
      return False
    step = self.checkpointer.latest_step() if step is None else step
    if step is None:
      return False
    state, meta = self.checkpointer.restore(step, self.checkpoint_state(), self.arch_config)
    self.load_checkpoint_state(state)
    self.step = int(meta["data_position"])
    return True

  # ----- step --------------------------------------------------------------------------------
  def _loss(self, params, frozen, rest, batch, rng):
    # copy=True: fresh Variables owned by this trace, so reseeding / dropout may mutate them.
    model = nnx.merge(self.graphdef, params, frozen, rest, copy=True)
    nnx.reseed(model, dropout=rng)
    loss, aux = self.loss_fn(model, batch, rng)
    return loss, aux

  def _train_step(self, params, opt_state, frozen, rest, batch, step):
    rng = jax.random.fold_in(self.base_key, step)
    grad_fn = jax.value_and_grad(self._loss, has_aux=True)
    accum = self.config.grad_accum
    if accum == 1:
      (loss, aux), grads = grad_fn(params, frozen, rest, batch, rng)
    else:
      micro = jax.tree.map(lambda x: x.reshape(accum, x.shape[0] // accum, *x.shape[1:]), batch)

      def body(carry, inputs):
        i, mb = inputs
        (l, a), g = grad_fn(params, frozen, rest, mb, jax.random.fold_in(rng, i))
        return jax.tree.map(jnp.add, carry, (l, a, g)), None

      zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(
          lambda: grad_fn(params, frozen, rest, jax.tree.map(lambda x: x[0], micro), rng)))
      zeros = (zeros[0][0], zeros[0][1], zeros[1])
      (loss, aux, grads), _ = jax.lax.scan(body, zeros, (jnp.arange(accum), micro))
      loss, aux, grads = jax.tree.map(lambda x: x / accum, (loss, aux, grads))
    updates, opt_state = self.tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
    return params, opt_state, metrics

  def _put_batch(self, batch):
    if self.mesh is None:
      return jax.tree.map(jnp.asarray, batch)

    def put(x):  # every process holds the whole global batch and places its devices' rows
      x = np.asarray(x)
      spec = param_spec(x.shape, ("batch",) + (None,) * (x.ndim - 1), self.rules, self.mesh)
      return jax.make_array_from_process_local_data(NamedSharding(self.mesh, spec), x, x.shape)
    return jax.tree.map(put, batch)

  def train_step(self, batch) -> dict:
    """One optimiser step on a global batch; returns the step's metrics as device arrays."""
    with use_mesh_rules(self.mesh, self.rules):
      self.params, self.opt_state, metrics = self._step_fn(
          self.params, self.opt_state, self.frozen, self.rest, self._put_batch(batch),
          jnp.asarray(self.step, jnp.int32))
    self.step += 1
    return metrics

  # ----- loop --------------------------------------------------------------------------------
  def evaluate(self) -> dict:
    if self.eval_fn is None:
      return {}
    with use_mesh_rules(self.mesh, self.rules):
      return {f"eval/{k}": float(v) for k, v in self.eval_fn(self.model, self.step).items()}

  def train(self, resume: bool = False, stop_at: int | None = None) -> list[dict]:
    """Trains to ``config.steps`` (or ``stop_at``), resuming from the latest checkpoint if asked.

    Returns the logged records ``{"step", "loss", ..., "tokens_per_s"}`` of this call.
    """
    cfg = self.config
    if resume:
      self.restore()
    end = min(cfg.steps, stop_at) if stop_at is not None else cfg.steps
    main = jax.process_index() == 0  # one process writes metrics and shows progress
    writer = (MetricsWriter(self.workdir, self.step if resume else None)
              if self.workdir and main else None)
    history, tokens, t0 = [], 0, time.perf_counter()
    bar = tqdm(total=cfg.steps, initial=self.step, disable=not (cfg.progress and main),
               desc="train", dynamic_ncols=True)
    iterator = self.batches(cfg.seed, self.step)
    try:
      while self.step < end:
        batch = next(iterator)
        tokens += self.tokens_fn(batch)
        metrics = self.train_step(batch)
        bar.update(1)
        record = None
        if self.step % cfg.log_every == 0 or self.step == end:
          record = {k: float(v) for k, v in metrics.items()}
          record["tokens_per_s"] = tokens / max(time.perf_counter() - t0, 1e-9)
          tokens, t0 = 0, time.perf_counter()
          bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
        if cfg.eval_every and (self.step % cfg.eval_every == 0 or self.step == cfg.steps):
          record = {**(record or {}), **self.evaluate()}
        if record is not None:
          history.append({"step": self.step, **record})
          if writer:
            writer.write(self.step, record)
        if self.checkpointer and (self.checkpointer.should_save(self.step)
                                  or self.step == cfg.steps):
          self.save(force=self.step == cfg.steps)
    finally:
      bar.close()
      if writer:
        writer.close()
      if self.checkpointer:
        self.checkpointer.wait()
    return history
