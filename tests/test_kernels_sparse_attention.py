"""Block-sparse attention: Pallas kernels (interpret mode) against the pure-JAX reference."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import (block_importance, blocks_for_ratio, dense_selection,
                            selection_from_block_mask, selection_from_scores, sparse_attention,
                            sparse_attention_reference)

KERNELS = ("mosaic_tpu", "triton")


def _qkv(seed, b, sq, sk, hq, hkv, d, dtype=jnp.float32):
  ks = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(ks[0], (b, sq, hq, d), dtype),
          jax.random.normal(ks[1], (b, sk, hkv, d), dtype),
          jax.random.normal(ks[2], (b, sk, hkv, d), dtype))


def _random_selection(seed, bs, hs, sq, sk, bq, bk, empty_row=True):
  nq, nk = math.ceil(sq / bq), math.ceil(sk / bk)
  mask = jax.random.bernoulli(jax.random.key(seed), 0.5, (bs, hs, nq, nk))
  if empty_row:  # one query block of every head selects nothing: its rows must output 0
    mask = mask.at[:, :, 0].set(False)
  return selection_from_block_mask(mask, bq, bk)


def _seed():
  return int(np.random.default_rng().integers(1 << 30))


@pytest.mark.parametrize("impl", KERNELS)
@pytest.mark.parametrize("hq,hkv,sel_heads,bs,causal", [
    (4, 4, "kv", 2, False),  # MHA, per-batch selection
    (4, 1, "kv", 1, True),   # GQA 4, shared by the batch, causal
    (8, 1, "q", 2, False),   # GQA 8, per query head
    (8, 2, "shared", 1, True),
])
def test_forward_matches_reference(impl, hq, hkv, sel_heads, bs, causal):
  seed = _seed()
  b, sq, sk, d, bq, bk = 2, 72, 100, 32, 16, 32  # lengths are not block multiples
  q, k, v = _qkv(seed, b, sq, sk, hq, hkv, d)
  hs = {"kv": hkv, "q": hq, "shared": 1}[sel_heads]
  sel = _random_selection(seed + 1, bs, hs, sq, sk, bq, bk)
  ref = sparse_attention_reference(q, k, v, sel, causal=causal)
  out = sparse_attention(q, k, v, sel, causal=causal, implementation=impl)
  np.testing.assert_allclose(out, ref, atol=2e-5, rtol=2e-5)
  np.testing.assert_array_equal(out[:, :bq], 0.0)  # the empty query block


@pytest.mark.parametrize("impl", KERNELS)
def test_segments_and_padding(impl):
  seed = _seed()
  b, s, hq, hkv, d = 2, 40, 4, 2, 16
  q, k, v = _qkv(seed, b, s, s, hq, hkv, d)
  lengths = jnp.array([40, 23])
  valid = jnp.arange(s)[None] < lengths[:, None]
  seg = jnp.where(valid, jnp.arange(s)[None] // 17, -1)  # packed segments + padding
  kv_seg = jnp.where(valid, seg, -2)  # pad queries match no key: their rows output 0
  sel = _random_selection(seed + 1, 1, hkv, s, s, 16, 16, empty_row=False)
  kw = dict(q_segment_ids=seg, kv_segment_ids=kv_seg, causal=True)
  ref = sparse_attention_reference(q, k, v, sel, **kw)
  out = sparse_attention(q, k, v, sel, implementation=impl, **kw)
  np.testing.assert_allclose(out, ref, atol=2e-5, rtol=2e-5)
  np.testing.assert_array_equal(out[1, 23:], 0.0)


@pytest.mark.parametrize("impl", KERNELS + ("xla",))
def test_keep_ratio_one_is_dense_attention(impl):
  b, s, hq, hkv, d = 1, 96, 8, 2, 32
  q, k, v = _qkv(_seed(), b, s, s, hq, hkv, d)
  scores = block_importance(q, k, 32, 32)
  sel = selection_from_scores(scores, 1.0, 32, 32)
  for causal in (False, True):
    dense = jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation="xla")
    out = sparse_attention(q, k, v, sel, causal=causal, implementation=impl)
    np.testing.assert_allclose(out, dense, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("impl", KERNELS)
@pytest.mark.parametrize("causal,segments", [(False, False), (True, True)])
def test_gradients_match_reference(impl, causal, segments):
  seed = _seed()
  b, sq, sk, hq, hkv, d = 2, 48, 56, 4, 2, 16
  q, k, v = _qkv(seed, b, sq, sk, hq, hkv, d)
  sel = _random_selection(seed + 1, b, hkv, sq, sk, 16, 16)
  w = jax.random.normal(jax.random.key(seed + 2), (b, sq, hq, d))
  kw = dict(causal=causal)
  if segments:
    kw.update(q_segment_ids=jnp.arange(sq)[None].repeat(b, 0) // 20,
              kv_segment_ids=jnp.arange(sk)[None].repeat(b, 0) // 20)

  def loss(fn):
    return lambda q, k, v: jnp.sum(fn(q, k, v) * w)

  got = jax.grad(loss(lambda q, k, v: sparse_attention(q, k, v, sel, implementation=impl, **kw)),
                 argnums=(0, 1, 2))(q, k, v)
  want = jax.grad(loss(lambda q, k, v: sparse_attention_reference(q, k, v, sel, **kw)),
                  argnums=(0, 1, 2))(q, k, v)
  for g, r in zip(got, want):
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, r, atol=5e-5, rtol=5e-5)


def test_selection_from_scores_respects_keep_ratios():
  rng = np.random.default_rng()
  nk, hs = 13, 6
  scores = jnp.asarray(rng.normal(size=(2, hs, 5, nk)), jnp.float32)
  keep = jnp.asarray([0.01, 0.1, 0.3, 0.5, 0.77, 1.0])
  sel = selection_from_scores(scores, keep, 16, 16)
  want_k = np.clip(np.ceil(np.asarray(keep) * nk), 1, nk)
  np.testing.assert_array_equal(sel.kv_block_counts, np.broadcast_to(want_k[None, :, None],
                                                                     (2, hs, 5)))
  np.testing.assert_array_equal(blocks_for_ratio(keep, nk), want_k)
  mask = np.asarray(sel.block_mask(nk))
  s = np.asarray(scores)
  for idx in np.ndindex(*s.shape[:3]):
    kth = np.sort(s[idx])[::-1][int(want_k[idx[1]]) - 1]
    assert set(np.flatnonzero(mask[idx])) == set(np.flatnonzero(s[idx] >= kth))
  # Listed indices ascend; padding repeats the last valid index.
  ind, cnt = np.asarray(sel.kv_block_indices), np.asarray(sel.kv_block_counts)
  for idx in np.ndindex(*cnt.shape):
    row = ind[idx]
    assert np.all(np.diff(row[:cnt[idx]]) > 0) and np.all(row[cnt[idx]:] == row[cnt[idx] - 1])


def test_selection_from_block_mask_round_trip():
  mask = jax.random.bernoulli(jax.random.key(_seed()), 0.4, (3, 2, 4, 7))
  sel = selection_from_block_mask(mask, 8, 8)
  np.testing.assert_array_equal(sel.block_mask(7), mask)
  np.testing.assert_array_equal(sel.kv_block_counts, mask.sum(-1))
  assert dense_selection(2, 30, 50, 16, 16).kv_block_counts.min() == 4


def test_block_importance_is_tile_mean_probability():
  b, sq, sk, hq, hkv, d, bq, bk = 1, 40, 50, 4, 2, 8, 16, 16
  q, k, _ = _qkv(_seed(), b, sq, sk, hq, hkv, d)
  got = block_importance(q, k, bq, bk, per_kv_head=True)
  kr = np.repeat(np.asarray(k, np.float64), hq // hkv, axis=2)
  s = np.einsum("bqhd,bkhd->bhqk", np.asarray(q, np.float64), kr) / math.sqrt(d)
  p = np.exp(s - s.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  want = np.zeros((b, hq, 3, 4))
  for i in range(3):
    for j in range(4):
      want[:, :, i, j] = p[:, :, i * bq:(i + 1) * bq, j * bk:(j + 1) * bk].mean(axis=(2, 3))
  want = want.reshape(b, hkv, hq // hkv, 3, 4).mean(axis=2)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("causal,segments", [(False, False), (True, True)])
def test_tpu_kernel_lowers_for_tpu(causal, segments):
  b, s, hq, hkv, d = 1, 512, 8, 2, 128
  sel = selection_from_scores(jnp.ones((1, hkv, 4, 4)), 0.5, 128, 128, max_blocks=2)

  def f(q, k, v, seg):
    kw = dict(q_segment_ids=seg, kv_segment_ids=seg) if segments else {}
    out = sparse_attention(q, k, v, sel, causal=causal, implementation="mosaic_tpu",
                           interpret=False, **kw)
    return out.astype(jnp.float32).sum()

  args = (jax.ShapeDtypeStruct((b, s, hq, d), jnp.bfloat16),
          *[jax.ShapeDtypeStruct((b, s, hkv, d), jnp.bfloat16)] * 2,
          jax.ShapeDtypeStruct((b, s), jnp.int32))
  for fn in (f, jax.grad(f, argnums=(0, 1, 2))):
    exported = jax.export.export(jax.jit(fn), platforms=["tpu"])(*args)
    assert "tpu_custom_call" in exported.mlir_module()


@pytest.mark.parametrize("causal,segments,seq_k,group,sel_heads,d",
                         [(False, False, 512, 4, 2, 128), (True, False, 500, 1, 2, 64),
                          (True, True, 512, 4, 8, 128)])
def test_mosaic_gpu_kernels_lower_for_cuda(causal, segments, seq_k, group, sel_heads, d):
  """The Hopper kernels (forward, dQ, dK/dV) trace and lower through Mosaic GPU on CPU."""
  from pallas_kernels.sparse_attention import mosaic_gpu
  from pallas_kernels.sparse_attention.config import AttentionSpec
  b, s, hkv = 2, 512, 2
  hq = hkv * group
  sel = selection_from_scores(jnp.ones((b, sel_heads, 4, 4)), 0.5, 128, 128)
  spec = AttentionSpec(block_q=128, block_k=128, seq_q=s, seq_k=seq_k, num_q_heads=hq,
                       num_kv_heads=hkv, num_sel_heads=sel_heads, sel_batch=b, causal=causal,
                       segments=segments, scale=d ** -0.5)
  idx, cnt = sel.kv_block_indices, sel.kv_block_counts

  def f(q, k, v, seg):
    seg = (seg, seg) if segments else (None, None)
    out, lse = mosaic_gpu.forward(q, k, v, idx, cnt, *seg, spec)
    return mosaic_gpu.backward(q, k, v, out, lse, out, idx, cnt, *seg, spec)

  args = (jax.ShapeDtypeStruct((b, s, hq, d), jnp.bfloat16),
          *[jax.ShapeDtypeStruct((b, s, hkv, d), jnp.bfloat16)] * 2,
          jax.ShapeDtypeStruct((b, s), jnp.int32))
  module = jax.export.export(jax.jit(f), platforms=["cuda"])(*args).mlir_module()
  assert module.count("stablehlo.custom_call @mosaic_gpu") == 3  # forward, dQ, dK/dV


def test_bad_inputs_raise_named_errors():
  from jaxvlm.errors import ConfigError, ShapeError
  q, k, v = _qkv(_seed(), 1, 32, 32, 4, 2, 8)
  sel = dense_selection(2, 32, 32, 16, 16)
  with pytest.raises(ShapeError, match="selection.kv_block_indices"):
    sparse_attention(q, k, v, dense_selection(2, 64, 32, 16, 16))
  with pytest.raises(ShapeError, match="num_kv_heads"):
    sparse_attention(q, k[:, :, :1].repeat(3, 2), v[:, :, :1].repeat(3, 2), sel)
  with pytest.raises(ConfigError, match="implementation: got 'mosaic_gpu', expected a Hopper"):
    sparse_attention(q, k, v, sel, implementation="mosaic_gpu")
  with pytest.raises(ShapeError, match="keep_ratio"):
    selection_from_scores(jnp.zeros((1, 2, 2, 2)), jnp.ones(3), 16, 16)
