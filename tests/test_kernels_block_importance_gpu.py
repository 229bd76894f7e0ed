"""GPU checks of the compiled Triton tile-importance kernel against the dense reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import backend, block_importance, block_importance_reference
from pallas_kernels.block_importance.ops import AVAILABLE

from conftest import rel_l2

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a CUDA GPU")]

# Scores of float32 inputs go through tf32 matrix units; bf16 products are exact in float32.
TOL = {jnp.float32: 1e-2, jnp.bfloat16: 2e-3}


def test_triton_is_the_gpu_default():
  assert backend.resolve(None, AVAILABLE) == "triton"


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("s,group,d,blk,causal,segments", [
    (1000, 4, 128, 128, False, False),  # padded to 1024 inside
    (1000, 1, 128, 128, True, True),
    (1000, 2, 64, 64, True, False),
    (1000, 4, 128, 32, True, True),  # SparseD's default block of 32
    (4096, 4, 128, 128, False, False),
    (4096, 4, 128, 128, True, False)])
def test_block_importance_gpu(dtype, s, group, d, blk, causal, segments):
  seed = int(np.random.default_rng().integers(1 << 30))
  kq, kk = jax.random.split(jax.random.key(seed))
  b, hkv = (2, 2) if s < 4096 else (1, 2)
  hq = hkv * group
  q = 2.0 * jax.random.normal(kq, (b, s, hq, d), jnp.float32)
  k = 2.0 * jax.random.normal(kk, (b, s, hkv, d), jnp.float32)
  q, k = q.astype(dtype), k.astype(dtype)
  kw = dict(causal=causal, per_kv_head=False)
  if segments:  # two packed sequences per row, then right padding (id -1) from position 900
    seg = jnp.where(jnp.arange(s) < 900, (jnp.arange(s) >= 400 + 100 * jnp.arange(b)[:, None]),
                    -1).astype(jnp.int32)
    kw.update(q_segment_ids=seg, kv_segment_ids=seg)
  with jax.default_matmul_precision("highest"):
    want = block_importance_reference(q.astype(jnp.float32), k.astype(jnp.float32), blk, blk,
                                      **kw)
  got = jax.jit(lambda q, k: block_importance(q, k, blk, blk, implementation="triton", **kw))(q, k)
  assert got.shape == want.shape and got.dtype == jnp.float32
  assert np.all(np.isfinite(np.asarray(got)))
  assert rel_l2(got, want) < TOL[dtype]
  if causal:  # tiles past the diagonal are skipped and stay exactly 0
    nb = -(-s // blk)
    np.testing.assert_array_equal(np.asarray(got)[..., np.triu_indices(nb, 1)[0],
                                                  np.triu_indices(nb, 1)[1]], 0.0)


def test_llada_8b_shape_runs_without_quadratic_memory():
  """B=1, 32 heads, d=128, S=32768, blocks of 128, bf16: every query row's mass is 1."""
  s, h, blk = 32768, 32, 128
  kq, kk = jax.random.split(jax.random.key(0))
  q = jax.random.normal(kq, (1, s, h, 128), jnp.bfloat16)
  k = jax.random.normal(kk, (1, s, h, 128), jnp.bfloat16)
  got = jax.jit(lambda q, k: block_importance(q, k, blk, blk, implementation="triton"))(q, k)
  assert got.shape == (1, h, s // blk, s // blk)
  # Tile means times tile width summed over key blocks: the mean row mass of a query block.
  np.testing.assert_allclose(np.asarray(got, np.float64).sum(-1) * blk, 1.0, rtol=1e-3)
