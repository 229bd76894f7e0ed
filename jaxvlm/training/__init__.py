"""Sharded training: the generic trainer, optimisers, Orbax checkpoints, metrics, remat."""

from jaxvlm.training.checkpoint import Checkpointer
from jaxvlm.training.losses import causal_lm_loss
from jaxvlm.training.metrics import MetricsWriter, read_metrics
from jaxvlm.training.optim import make_optimizer, make_schedule
from jaxvlm.training.remat import remat_modules
from jaxvlm.training.trainer import TrainConfig, Trainer

__all__ = ["Checkpointer", "MetricsWriter", "TrainConfig", "Trainer", "causal_lm_loss",
           "make_optimizer", "make_schedule", "read_metrics", "remat_modules"]
