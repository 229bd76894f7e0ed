"""Shared fixtures of the training tests: a tiny LLaMA, random SFT batches, a Trainer factory."""

from __future__ import annotations

import numpy as np

from jaxvlm import models
from jaxvlm.training import TrainConfig, Trainer, causal_lm_loss

TINY_LLAMA = dict(model_type="llama", vocab_size=64, hidden_size=32, intermediate_size=64,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=64, tie_word_embeddings=False)
OPTIMIZER = dict(lr=1e-2, schedule="cosine", warmup_steps=2, weight_decay=0.1, grad_clip=1.0)


def tiny_llama(mesh=None, seed: int = 0, **overrides):
  return models.from_config({**TINY_LLAMA, **overrides}, seed=seed, mesh=mesh)


def random_batches(batch: int = 8, seq: int = 12, vocab: int = 64):
  """``factory(seed, start_step)``: random token batches that depend only on (seed, step)."""
  def factory(seed, start):
    step = start
    while True:
      rng = np.random.default_rng([seed, step])
      ids = rng.integers(3, vocab, (batch, seq), dtype=np.int32)
      yield {"input_ids": ids, "attention_mask": np.ones_like(ids), "loss_mask": np.ones_like(ids)}
      step += 1
  return factory


def make_trainer(model, mesh=None, workdir=None, steps: int = 4, trainable=None, **config):
  kwargs = {} if trainable is None else {"trainable": trainable}
  return Trainer(model, OPTIMIZER, causal_lm_loss, random_batches(), mesh,
                 config=TrainConfig(steps=steps, progress=False, log_every=1, **config),
                 workdir=workdir, arch_config=dict(TINY_LLAMA), **kwargs)
