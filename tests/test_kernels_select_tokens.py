"""Token selection: Pallas kernels (interpret mode) against the pure-JAX reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvlm.errors import ConfigError
from pallas_kernels import select_tokens, select_tokens_above, select_tokens_reference
from pallas_kernels.select_tokens import mosaic_tpu

# (implementation, tuning): the Triton fused kernel also with small token blocks and several
# column chunks per row (only chunk 0 writes the indices), its dense variant, the two kernels.
KERNELS = [("mosaic_tpu", {}), ("triton", {}),
           ("triton", dict(rows=16, d_chunk=8, radix_bits=4, num_warps=4)),
           ("triton", dict(dense_rows=16, rows=64, d_chunk=8, radix_bits=2)),
           ("triton", dict(fused=False))]
KERNEL_IDS = ["mosaic_tpu", "triton-fused", "triton-fused-small-blocks", "triton-fused-dense",
              "triton-two-kernel"]


def _inputs(b, n, d, ties):
  rng = np.random.default_rng()
  scores = rng.normal(size=(b, n)).astype(np.float32)
  if ties:  # few distinct values, both zeros, infinities: the tie rule decides
    scores = np.round(scores * 2)
    scores[0, :3], scores[0, 3:6], scores[-1, :2] = -0.0, 0.0, [np.inf, -np.inf]
  return jnp.asarray(scores), jnp.asarray(rng.normal(size=(b, n, d)), jnp.bfloat16)


def _check(got, want):
  np.testing.assert_array_equal(got.indices, want.indices)
  np.testing.assert_array_equal(got.features, want.features)
  np.testing.assert_array_equal(got.counts, want.counts)


@pytest.mark.parametrize("impl,tuning", KERNELS, ids=KERNEL_IDS)
@pytest.mark.parametrize("n,k,max_k,ties", [(300, 37, 57, True), (128, 1, 1, False)])
def test_exact_top_k(impl, tuning, n, k, max_k, ties):
  scores, feats = _inputs(3, n, 32, ties)
  got = select_tokens(scores, feats, k, max_k=max_k, implementation=impl, **tuning)
  _check(got, select_tokens(scores, feats, k, max_k=max_k, implementation="xla"))
  # The reference itself: the kept set is the top-k with ties by lower index, ascending,
  # then -1 pads up to max_k.
  s = np.asarray(scores) + 0.0
  for row in range(3):
    order = sorted(range(n), key=lambda i: (-s[row, i], i))[:k]
    np.testing.assert_array_equal(got.indices[row], sorted(order) + [-1] * (max_k - k))


@pytest.mark.parametrize("impl,tuning", KERNELS, ids=KERNEL_IDS)
def test_ragged_budgets_and_threshold(impl, tuning):
  scores, feats = _inputs(4, 200, 24, ties=True)  # D = 24: not a power of two
  budgets = jnp.asarray([0, 5, 250, 200])  # 250: clipped to max_k = N
  got = select_tokens(scores, feats, budgets, max_k=200, implementation=impl, **tuning)
  _check(got, select_tokens_reference(scores, feats, jnp.minimum(budgets, 200), 200))
  assert np.all(np.asarray(got.indices)[0] == -1) and np.all(np.asarray(got.features)[0] == 0)
  np.testing.assert_array_equal(got.indices[2:], np.tile(np.arange(200), (2, 1)))
  thr = select_tokens_above(scores, feats, 1.0, max_k=200, implementation=impl, **tuning)
  want = (np.asarray(scores) >= 1.0).sum(1)
  np.testing.assert_array_equal(thr.counts, want)
  _check(thr, select_tokens_reference(scores, feats, want, 200))


def test_tuning_only_for_triton():
  scores, feats = _inputs(1, 8, 2, ties=False)
  with pytest.raises(ConfigError, match="tuning"):
    select_tokens(scores, feats, 2, implementation="xla", rows=16)


def test_threshold_kernel_lowers_for_tpu():
  def f(scores, counts):
    return mosaic_tpu.threshold(scores, counts, interpret=False)

  exported = jax.export.export(jax.jit(f), platforms=["tpu"])(
      jax.ShapeDtypeStruct((64, 4096), jnp.float32), jax.ShapeDtypeStruct((64,), jnp.int32))
  assert "tpu_custom_call" in exported.mlir_module()


@pytest.mark.parametrize("radix_bits", [1, 2, 4])
def test_threshold_search_radix(radix_bits):
  from pallas_kernels.select_tokens import search
  scores, _ = _inputs(4, 333, 1, ties=True)
  k = jnp.asarray([[1], [17], [200], [333]])
  t = search.kth_largest_key(search.sortable_key(scores), k, radix_bits)
  s = np.sort(np.asarray(scores) + 0.0, axis=1)[:, ::-1]
  want = search.sortable_key(jnp.asarray(s[np.arange(4), np.asarray(k[:, 0]) - 1]))
  np.testing.assert_array_equal(t[:, 0], want)
