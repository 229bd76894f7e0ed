"""Metrics sinks: one JSON object per line (``metrics.jsonl``) and TensorBoard event files."""

from __future__ import annotations

import json
import os
from typing import Mapping


class MetricsWriter:
  """Appends ``{"step": s, **scalars}`` to ``<dir>/metrics.jsonl`` and to TensorBoard events.

  On resume from step ``k`` the JSONL file is cut to the records with ``step <= k`` so that the
  file describes exactly one run history.
  """

  def __init__(self, directory: str, resume_step: int | None = None):
    os.makedirs(directory, exist_ok=True)
    self.path = os.path.join(directory, "metrics.jsonl")
    if resume_step is not None and os.path.exists(self.path):
      with open(self.path) as f:
        kept = [line for line in f if line.strip() and json.loads(line)["step"] <= resume_step]
      with open(self.path, "w") as f:
        f.writelines(kept)
    self._file = open(self.path, "a")
    from tensorboardX import SummaryWriter  # here: importing it imports torch (seconds)
    self._tb = SummaryWriter(os.path.join(directory, "tensorboard"))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    for k, v in scalars.items():
      self._tb.add_scalar(k, float(v), int(step))

  def close(self) -> None:
    self._file.close()
    self._tb.close()


def read_metrics(path: str) -> list[dict]:
  """The records of a ``metrics.jsonl`` file."""
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
