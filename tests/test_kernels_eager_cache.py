"""Eager (un-jitted) kernel calls reuse their compiled kernels: a second call with the same
shapes compiles nothing (a fresh pallas_call kernel partial per call used to recompile every time:
~1 s of Triton compilation per batch on the GPU in the SGL and AdaLLaVA pipelines)."""

import contextlib
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pallas_kernels


class _Count(logging.Handler):
  def __init__(self):
    super().__init__()
    self.compiles = 0

  def emit(self, record):
    self.compiles += record.getMessage().startswith("Compiling ")


@contextlib.contextmanager
def _count_compiles():
  handler, logger = _Count(), logging.getLogger("jax")
  logger.addHandler(handler)
  jax.config.update("jax_log_compiles", True)
  try:
    yield handler
  finally:
    jax.config.update("jax_log_compiles", False)
    logger.removeHandler(handler)


def _inputs():
  rng = np.random.default_rng()
  q = jnp.asarray(rng.standard_normal((1, 64, 2, 16)), jnp.float32)
  k = jnp.asarray(rng.standard_normal((1, 64, 1, 16)), jnp.float32)
  return q, k


CALLS = {
    "select_tokens": lambda: pallas_kernels.select_tokens(
        *(lambda s: (s, s[..., None]))(jnp.asarray(np.random.rand(2, 64), jnp.float32)), 8,
        implementation="triton", interpret=True),
    "block_importance": lambda: pallas_kernels.block_importance(
        *_inputs(), 16, 16, implementation="triton", interpret=True),
    "sparse_attention": lambda: pallas_kernels.sparse_attention(
        *(lambda q, k: (q, k, k))(*_inputs()),
        pallas_kernels.dense_selection(1, 64, 64, 16, 16), implementation="triton",
        interpret=True),
}


@pytest.mark.parametrize("op", sorted(CALLS))
def test_second_eager_call_compiles_nothing(op):
  jax.block_until_ready(CALLS[op]())
  with _count_compiles() as seen:
    jax.block_until_ready(CALLS[op]())
  assert seen.compiles == 0, f"{op}: {seen.compiles} compilations on a repeated eager call"
