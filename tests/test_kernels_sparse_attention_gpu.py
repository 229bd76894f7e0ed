"""GPU checks of the sparse-attention kernels against the reference (bf16 and float32)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvlm.errors import ConfigError
from pallas_kernels import selection_from_scores, sparse_attention, sparse_attention_reference

from conftest import rel_l2

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a CUDA GPU")]

# tf32 matrix units for float32 land near 3e-4, bf16 operands near 1e-2 (relative L2 error).
TOL = {jnp.float32: 2e-3, jnp.bfloat16: 2e-2}


@pytest.mark.parametrize("impl,dtype", [("triton", jnp.float32), ("triton", jnp.bfloat16),
                                        ("mosaic_gpu", jnp.bfloat16)])
@pytest.mark.parametrize("causal,segments,keep,group,d", [
    (False, False, 0.3, 4, 128), (True, False, 1.0, 8, 128), (False, False, 1.0, 1, 128),
    (True, True, 0.1, 4, 128), (False, True, 0.5, 2, 128), (True, False, 0.5, 4, 64)])
def test_sparse_attention_gpu(impl, dtype, causal, segments, keep, group, d):
  seed = int(np.random.default_rng().integers(1 << 30))
  ks = jax.random.split(jax.random.key(seed), 5)
  b, s, hkv, blk = 2, 1000, 2, 128  # 1000: padded to 1024 inside
  hq = hkv * group
  q = jax.random.normal(ks[0], (b, s, hq, d), dtype)
  k = jax.random.normal(ks[1], (b, s, hkv, d), dtype)
  v = jax.random.normal(ks[2], (b, s, hkv, d), dtype)
  nb = -(-s // blk)
  sel = selection_from_scores(jax.random.uniform(ks[3], (b, hkv, nb, nb)), keep, blk, blk)
  w = jax.random.normal(ks[4], q.shape, jnp.float32)
  up = lambda *xs: [x.astype(jnp.float32) for x in xs]
  kw = dict(causal=causal)
  if segments:  # two packed sequences per row, then right padding (id -1) from position 900
    seg = jnp.where(jnp.arange(s) < 900, (jnp.arange(s) >= 400 + 100 * jnp.arange(b)[:, None]),
                    -1).astype(jnp.int32)
    kw.update(q_segment_ids=seg, kv_segment_ids=seg)

  def loss(fn, *args):
    return jnp.sum(fn(*args).astype(jnp.float32) * w)

  with jax.default_matmul_precision("highest"):
    ref_grads = jax.grad(
        lambda *a: loss(lambda *x: sparse_attention_reference(*x, sel, **kw), *a),
        argnums=(0, 1, 2))(*up(q, k, v))
    ref_out = sparse_attention_reference(*up(q, k, v), sel, **kw)
  fn = lambda *x: sparse_attention(*x, sel, implementation=impl, **kw)
  out = fn(q, k, v)
  grads = jax.grad(lambda *a: loss(fn, *a), argnums=(0, 1, 2))(q, k, v)
  assert out.dtype == dtype and rel_l2(out, ref_out) < TOL[dtype]
  for g, r in zip(grads, ref_grads):
    assert np.all(np.isfinite(np.asarray(g, np.float32))) and rel_l2(g, r) < 2 * TOL[dtype]


def test_mosaic_gpu_refuses_what_it_cannot_run():
  q = jnp.zeros((1, 256, 2, 128), jnp.float32)
  sel = selection_from_scores(jnp.ones((1, 2, 2, 2)), 1.0, 128, 128)
  with pytest.raises(ConfigError, match="implementation.*float32"):
    sparse_attention(q, q, q, sel, implementation="mosaic_gpu")
  q = q.astype(jnp.bfloat16)
  with pytest.raises(ConfigError, match="implementation.*multiples of 128"):
    sparse_attention(q, q, q, selection_from_scores(jnp.ones((1, 2, 4, 4)), 1.0, 64, 64),
                     implementation="mosaic_gpu")
  with pytest.raises(ConfigError, match="implementation.*head_dim 64 or 128"):
    wide = jnp.zeros((1, 256, 2, 256), jnp.bfloat16)
    sparse_attention(wide, wide, wide, sel, implementation="mosaic_gpu")
  with pytest.raises(ConfigError, match="implementation.*all bfloat16"):
    sparse_attention(q, q.astype(jnp.float16), q, sel, implementation="mosaic_gpu")
