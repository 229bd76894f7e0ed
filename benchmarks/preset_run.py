"""``jaxvlm run`` of a preset in a child process, for the real-shape dry runs (``run_*_real.py``).

The child gets this repository first on ``PYTHONPATH``, then the caller's own entries (where the
GPU machine's extra wheels live), so the preset runs on the same code and packages.
"""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child_env(**extra: str) -> dict[str, str]:
  """The caller's environment with the repository prepended to ``PYTHONPATH``, plus ``extra``."""
  path = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH", "")) if p)
  return dict(os.environ, PYTHONPATH=path, **extra)


def command(config: str, workdir: str, overrides: dict) -> list[str]:
  """The ``jaxvlm run`` command line of ``config`` with ``--config.KEY=VALUE`` overrides."""
  return ([sys.executable, "-m", "jaxvlm.cli", "run", "--config", config, "--workdir", workdir]
          + [f"--config.{k}={v}" for k, v in overrides.items()])


def run(config: str, workdir: str, overrides: dict, env: dict | None = None, **kwargs):
  """Runs :func:`command` from the repository root (``subprocess.run`` ``kwargs``)."""
  return subprocess.run(command(config, workdir, overrides), cwd=REPO,
                        env=env or child_env(), **kwargs)
