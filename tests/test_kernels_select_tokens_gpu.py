"""GPU checks of the select_tokens kernels against the reference (bf16 and float32)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import select_tokens

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a CUDA GPU")]

# The fused kernel (default, other block shapes, pipelined, D = 200 -> 8-column chunks), its
# dense variant (block barrier between the index pass and the gather) and the two kernels.
TUNINGS = {"fused": ({}, 256), "fused-blocks": (dict(rows=256, d_chunk=64, num_warps=4), 256),
           "fused-stages": (dict(num_stages=3, radix_bits=2), 256), "fused-odd-d": ({}, 200),
           "fused-dense": (dict(dense_rows=64, rows=1024), 256),
           "two-kernel": (dict(fused=False), 256)}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("name", list(TUNINGS))
def test_select_tokens_gpu(dtype, name):
  tuning, d = TUNINGS[name]
  rng = np.random.default_rng()
  b, n, k = 8, 4000, 1024
  scores = jnp.asarray(np.round(rng.normal(size=(b, n)) * 8), dtype)  # ties
  feats = jnp.asarray(rng.normal(size=(b, n, d)), dtype)
  budgets = rng.integers(0, k, b)
  budgets[:2] = 0, k
  for budget, max_k in ((k, None), (jnp.asarray(budgets), k), (n, None)):
    got = select_tokens(scores, feats, budget, max_k=max_k, implementation="triton", **tuning)
    want = select_tokens(scores, feats, budget, max_k=max_k, implementation="xla")
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(got.features, want.features)
