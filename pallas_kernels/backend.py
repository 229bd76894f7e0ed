"""Backend choice shared by the kernels (tokamax-style ``implementation=`` argument)."""

from __future__ import annotations

import jax

from pallas_kernels.errors import ConfigError


def resolve(implementation: str | None, available: tuple[str, ...]) -> str:
  """The backend to run: the one asked for (if this op has it) or the platform's default.

  Default: ``mosaic_tpu`` on TPU, the op's GPU kernel on GPU (``mosaic_gpu`` if it has one,
  else ``triton``), ``xla`` elsewhere. Asking for a backend the op lacks is a ``ConfigError``.
  """
  if implementation is None:
    platform = jax.default_backend()
    if platform == "tpu" and "mosaic_tpu" in available:
      return "mosaic_tpu"
    if platform == "gpu":
      for name in ("mosaic_gpu", "triton"):
        if name in available:
          return name
    return "xla"
  if implementation not in available:
    raise ConfigError("implementation", implementation, f"None or one of {available}")
  return implementation


def interpret_default(implementation: str) -> bool:
  """Pallas kernels run in interpret mode when the platform cannot compile them (CPU)."""
  platform = jax.default_backend()
  native = {"mosaic_tpu": "tpu", "mosaic_gpu": "gpu", "triton": "gpu"}
  return native.get(implementation, platform) != platform
