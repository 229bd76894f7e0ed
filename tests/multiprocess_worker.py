"""One process of a multi-process training run (``tests/test_multiprocess.py``).

``python multiprocess_worker.py OUT_DIR --devices 4 --num-processes 2 --process-id I --port P``
sets up ``--devices`` simulated CPU devices, joins the other processes through the mesh config's
``distributed`` block (``jax.distributed.initialize``, CPU collectives over gloo), trains the
tiny LLaMA of ``training_helpers`` for ``STEPS`` steps on a (data 2, fsdp 4) mesh with an Orbax
checkpoint under ``OUT_DIR/run``, and (process 0) writes the per-step losses and the final
parameters gathered from every process to ``OUT_DIR/result.npz``. With ``--num-processes 1`` and
8 devices it is the single-process reference on the same mesh.
"""

from __future__ import annotations

import argparse
import os
import re

STEPS = 3
MESH = {"data": 2, "fsdp": 4, "tensor": 1}


def run(out_dir: str, num_processes: int = 1, process_id: int = 0, port: int = 0) -> dict:
  """Trains and checkpoints; returns numpy ``{"loss": per-step losses, name: final parameter,
  "ckpt/" + name: every array of the checkpoint restored onto the mesh}``."""
  import jax
  import numpy as np
  from jax.experimental import multihost_utils

  from jaxvlm.sharding import make_mesh
  from jaxvlm.training.checkpoint import flatten
  from training_helpers import make_trainer, tiny_llama

  distributed = {"enabled": num_processes > 1, "coordinator_address": f"localhost:{port}",
                 "num_processes": num_processes, "process_id": process_id}
  mesh = make_mesh({**MESH, "distributed": distributed})
  trainer = make_trainer(tiny_llama(mesh), mesh=mesh, workdir=os.path.join(out_dir, "run"),
                         steps=STEPS)
  history = trainer.train()
  saved, _ = trainer.checkpointer.restore(STEPS, trainer.checkpoint_state(), trainer.arch_config)
  rng = saved.pop("rng")  # host numpy, the same in every process
  params, ckpt = (flatten(t)[0] for t in multihost_utils.process_allgather(
      (trainer.params, saved), tiled=True))
  return {"loss": np.array([h["loss"] for h in history]), **params, "ckpt/rng": rng,
          **{f"ckpt/{k}": v for k, v in ckpt.items()}}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("out_dir")
  parser.add_argument("--devices", type=int, default=8)
  parser.add_argument("--num-processes", type=int, default=1)
  parser.add_argument("--process-id", type=int, default=0)
  parser.add_argument("--port", type=int, default=0)
  args = parser.parse_args()
  flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", os.environ.get("XLA_FLAGS", ""))
  os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.devices}".strip()
  os.environ["JAX_PLATFORMS"] = "cpu"
  import jax
  import numpy as np
  if hasattr(jax.config, "jax_cpu_collectives_implementation"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  result = run(args.out_dir, args.num_processes, args.process_id, args.port)
  if args.process_id == 0:
    np.savez(os.path.join(args.out_dir, "result.npz"), **result)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
