"""Checkpointing: kill-and-resume is bitwise, SIGKILL mid-save, other mesh, changed config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from jaxvlm.errors import CheckpointError
from jaxvlm.sharding import make_mesh
from jaxvlm.training import read_metrics
from training_helpers import make_trainer, tiny_llama

STEPS = 6


def _assert_same(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("full"))
  trainer = make_trainer(tiny_llama(), workdir=workdir, steps=STEPS, checkpoint_every=2,
                         keep_checkpoints=2)
  trainer.train()
  return trainer, read_metrics(os.path.join(workdir, "metrics.jsonl"))


def test_interrupted_run_resumes_bitwise(tmp_path, uninterrupted):
  ref, ref_metrics = uninterrupted
  first = make_trainer(tiny_llama(), workdir=str(tmp_path), steps=STEPS, checkpoint_every=2)
  first.train(stop_at=3)  # checkpoint at 2; step 3 is lost and redone after the resume
  resumed = make_trainer(tiny_llama(seed=1), workdir=str(tmp_path), steps=STEPS,
                         checkpoint_every=2)
  resumed.train(resume=True)
  assert resumed.step == STEPS
  _assert_same(resumed.params, ref.params)
  _assert_same(resumed.opt_state, ref.opt_state)
  metrics = read_metrics(str(tmp_path / "metrics.jsonl"))
  assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
  assert [m["loss"] for m in metrics] == [m["loss"] for m in ref_metrics]
  assert os.listdir(tmp_path / "tensorboard")


_CHILD = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from jaxvlm.training import checkpoint
    from training_helpers import make_trainer, tiny_llama
    save = checkpoint.Checkpointer.save
    def save_then_die(self, step, state, meta, force=False):
      started = save(self, step, state, meta, force)
      if step == 4:  # the async write of step 4 is under way: die before it can finish
        os.kill(os.getpid(), signal.SIGKILL)
      return started
    checkpoint.Checkpointer.save = save_then_die
    make_trainer(tiny_llama(), workdir={workdir!r}, steps={steps}, checkpoint_every=2).train()
""")


def test_sigkill_mid_save_resumes_from_last_complete(tmp_path, uninterrupted):
  code = _CHILD.format(tests=os.path.dirname(__file__), workdir=str(tmp_path), steps=STEPS)
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
  assert proc.returncode == -9, proc.stderr[-2000:]
  ckpt = tmp_path / "checkpoints"
  assert sorted(d for d in os.listdir(ckpt) if d.isdigit()) == ["2"]  # step 4 never committed
  resumed = make_trainer(tiny_llama(), workdir=str(tmp_path), steps=STEPS, checkpoint_every=2)
  resumed.train(resume=True)
  _assert_same(resumed.params, uninterrupted[0].params)


def test_restore_onto_other_mesh_and_config_check(tmp_path, uninterrupted):
  ref = uninterrupted[0]
  mesh = make_mesh({"data": 1, "fsdp": 2, "tensor": 4})
  other = make_trainer(tiny_llama(mesh), mesh=mesh, workdir=str(ref.workdir), steps=STEPS)
  assert other.restore()
  assert other.step == STEPS
  q = other.params.model.layers[0].self_attn.q_proj.kernel[...]
  assert q.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  _assert_same(other.params, ref.params)
  changed = make_trainer(tiny_llama(hidden_size=48), workdir=str(ref.workdir), steps=STEPS)
  changed.arch_config = {**changed.arch_config, "hidden_size": 48}
  with pytest.raises(CheckpointError, match="hidden_size"):
    changed.restore()


def test_checkpoint_meta_holds_position_and_config(uninterrupted):
  ref = uninterrupted[0]
  meta = ref.checkpointer.read_meta(STEPS)
  assert meta["data_position"] == STEPS and meta["arch_config"]["hidden_size"] == 32
  assert ref.checkpointer.manager.all_steps() == [4, 6]  # keep_checkpoints=2
