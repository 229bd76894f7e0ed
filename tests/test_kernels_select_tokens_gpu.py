"""GPU checks of the select_tokens kernels against the reference (bf16 and float32)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import select_tokens

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a CUDA GPU")]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_select_tokens_gpu(dtype):
  rng = np.random.default_rng()
  b, n, k, d = 8, 4096, 1024, 256
  scores = jnp.asarray(np.round(rng.normal(size=(b, n)) * 8), dtype)  # ties
  feats = jnp.asarray(rng.normal(size=(b, n, d)), dtype)
  for budget, max_k in ((k, None), (jnp.asarray(rng.integers(0, k, b)), k)):
    got = select_tokens(scores, feats, budget, max_k=max_k, implementation="triton")
    want = select_tokens(scores, feats, budget, max_k=max_k, implementation="xla")
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(got.features, want.features)
