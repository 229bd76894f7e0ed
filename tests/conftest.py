"""Test setup: 8 simulated CPU devices (set before jax is imported), offline HF, shared helpers."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


def _has_gpu() -> bool:
  try:
    return any(d.platform == "gpu" for d in jax.devices())
  except RuntimeError:
    return False


def pytest_collection_modifyitems(config, items):
  if _has_gpu():
    return
  skip = pytest.mark.skip(reason="needs a CUDA GPU (run on the lent device)")
  for item in items:
    if "gpu" in item.keywords:
      item.add_marker(skip)


def assert_rel_close(ours, ref, rtol: float = 1e-4, where: str = ""):
  """max |ours - ref| <= rtol * max |ref| (the parity criterion)."""
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  assert ours.shape == ref.shape, f"{where}: shape {ours.shape} vs {ref.shape}"
  err = np.max(np.abs(ours - ref))
  scale = max(np.max(np.abs(ref)), 1e-12)
  assert err <= rtol * scale, f"{where}: max abs err {err:.3e} > {rtol} * {scale:.3e}"


def rel_l2(x, ref) -> float:
  """Relative L2 error ``|x - ref| / |ref|`` in float64 (the GPU kernel criterion)."""
  x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
  return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


def perturb_(model, *name_parts: str, scale: float = 0.3):
  """Adds ``scale``·N(0, 1) noise in place to every torch parameter whose name contains one of
  ``name_parts``, moving norms, biases and layer scales away from their constant init."""
  import torch
  with torch.no_grad():
    for name, p in model.named_parameters():
      if any(part in name for part in name_parts):
        p.add_(scale * torch.randn_like(p))
  return model


_FAST_COMPILE = os.environ.get("JAXVLM_TEST_FAST_COMPILE", "")


@pytest.fixture
def fast_compile():
  """XLA's cheap compile mode (``jax_disable_most_optimizations``: LLVM at -O0, no expensive
  passes) for the duration of a test: the same HLO programs, compiled in about half the time and
  run slower. For compile-bound tests (tiny shapes, few steps, many eager ops); a module opts in
  with ``pytestmark = pytest.mark.usefixtures("fast_compile")``. To compare timings,
  ``JAXVLM_TEST_FAST_COMPILE=1`` turns it on for every test and ``=0`` off for every test.

  The flag is not part of jit's cache key, so the test's executables are dropped when it ends:
  a later test in the same process must not reuse an -O0 program (its float results differ in
  the last bit from the optimised one, which breaks bitwise resume checks)."""
  if _FAST_COMPILE == "0":
    yield
    return
  before = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  try:
    yield
  finally:
    jax.config.update("jax_disable_most_optimizations", before)
    jax.clear_caches()


@pytest.fixture(autouse=_FAST_COMPILE == "1")
def _fast_compile_everywhere(fast_compile):
  yield


@pytest.fixture
def rng():
  """Fresh randomness per test (seed printed on failure through the test id)."""
  return np.random.default_rng()
