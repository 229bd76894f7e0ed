"""Flash-style tile importance against the dense formula (Pallas kernels in interpret mode)."""

from __future__ import annotations

import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import block_importance, block_importance_reference
from pallas_kernels.errors import ConfigError, ShapeError

IMPLS = ("xla", "mosaic_tpu", "triton")  # the Pallas kernels in interpret mode on CPU


def _seed():
  return int(np.random.default_rng().integers(1 << 30))


def _qk(seed, b, sq, sk, hq, hkv, d, dtype=jnp.float32):
  kq, kk = jax.random.split(jax.random.key(seed))
  # Scale 2: peaked rows, so tiles differ by orders of magnitude (as trained models' do).
  return (2.0 * jax.random.normal(kq, (b, sq, hq, d), dtype),
          2.0 * jax.random.normal(kk, (b, sk, hkv, d), dtype))


def _padded_segments(b, s, lengths, pad_id, period=23):
  """Packed segments of ``period`` tokens, then ``pad_id`` from each row's length on."""
  pos = jnp.arange(s)[None]
  return jnp.where(pos < jnp.asarray(lengths)[:, None], pos // period, pad_id).astype(jnp.int32)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("hq,hkv,sq,sk,bq,bk,causal,segments", [
    (4, 2, 72, 100, 16, 32, False, False),  # GQA 2, ragged S (neither length a block multiple)
    (8, 2, 64, 64, 16, 16, True, False),    # GQA 4, causal
    (2, 2, 50, 50, 16, 16, True, True),     # MHA, causal, packed + padding (fully masked rows)
    (4, 1, 40, 70, 16, 16, False, True),    # MQA, padding masks whole query / key blocks
    (2, 1, 100, 90, 32, 8, True, False),    # causal, block_q > block_k, Sq > Sk, 12 key blocks
])
def test_matches_dense_reference(impl, hq, hkv, sq, sk, bq, bk, causal, segments):
  b, d = 2, 16
  q, k = _qk(_seed(), b, sq, sk, hq, hkv, d)
  kw = {}
  if segments:  # row 1: padded from 20 (queries) / 30 (keys); pad ids match nothing
    kw.update(q_segment_ids=_padded_segments(b, sq, [sq, 20], -1),
              kv_segment_ids=_padded_segments(b, sk, [sk, 30], -2))
  # GQA averaging happens after the backend (ops.tile_means): the kernels run once, per head.
  for per_kv_head in (True, False) if impl == "xla" else (False,):
    want = jax.jit(lambda q, k, kw: block_importance_reference(
        q, k, bq, bk, per_kv_head=per_kv_head, causal=causal, **kw))(q, k, kw)
    got = jax.jit(lambda q, k, kw: block_importance(
        q, k, bq, bk, per_kv_head=per_kv_head, causal=causal, implementation=impl, **kw))(q, k, kw)
    assert got.shape == want.shape == (b, hkv if per_kv_head else hq, -(-sq // bq), -(-sk // bk))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-8)
  if segments:  # query blocks made only of padding have no mass at all
    np.testing.assert_array_equal(got[1, :, -(-20 // bq):], 0.0)
  # Rows sum to probability 1, so per query block the tile means times their widths sum to 1.
  cols = np.minimum(bk, sk - np.arange(-(-sk // bk)) * bk)
  mass = np.einsum("bhqk,k->bhq", np.asarray(got, np.float64), cols)
  if not segments:
    np.testing.assert_allclose(mass, 1.0, rtol=1e-5)


def test_matches_hand_computed_tile_means():
  """The reference itself against a float64 NumPy softmax averaged tile by tile."""
  b, sq, sk, hq, hkv, d, bq, bk = 1, 40, 50, 4, 2, 8, 16, 16
  q, k = _qk(_seed(), b, sq, sk, hq, hkv, d)
  kr = np.repeat(np.asarray(k, np.float64), hq // hkv, axis=2)
  s = np.einsum("bqhd,bkhd->bhqk", np.asarray(q, np.float64), kr) / np.sqrt(d)
  s = np.where(np.arange(sq)[:, None] >= np.arange(sk)[None], s, -np.inf)  # causal
  p = np.exp(s - s.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  want = np.zeros((b, hq, 3, 4))
  for i in range(3):
    for j in range(4):
      want[:, :, i, j] = p[:, :, i * bq:(i + 1) * bq, j * bk:(j + 1) * bk].mean(axis=(2, 3))
  want = want.reshape(b, hkv, hq // hkv, 3, 4).mean(axis=2)
  for fn in (block_importance_reference, block_importance):
    got = jax.jit(lambda q, k: fn(q, k, bq, bk, causal=True))(q, k)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-9)


def _largest_array(hlo: str) -> int:
  dims = re.findall(r"\b(?:pred|[subf]\d+|bf16)\[([\d,]*)\]", hlo)
  return max(int(np.prod([int(x) for x in d.split(",") if x])) for d in dims)


@pytest.mark.parametrize("causal", [False, True])
def test_compiled_program_holds_no_quadratic_array(causal):
  s, hq, hkv, d, blk = 8192, 8, 2, 16, 128
  fn = jax.jit(lambda q, k: block_importance(q, k, blk, blk, causal=causal, implementation="xla"))
  hlo = fn.lower(jax.ShapeDtypeStruct((1, s, hq, d), jnp.bfloat16),
                 jax.ShapeDtypeStruct((1, s, hkv, d), jnp.bfloat16)).compile().as_text()
  largest = _largest_array(hlo)
  assert largest < s * s
  assert largest <= hq * blk * s  # one block row of scores
  # The parser sees the dense reference's S x S buffers, so the check can fail.
  dense = jax.jit(lambda q, k: block_importance_reference(q, k, blk, blk)).lower(
      jax.ShapeDtypeStruct((1, 1024, 2, d), jnp.bfloat16),
      jax.ShapeDtypeStruct((1, 1024, 1, d), jnp.bfloat16)).compile().as_text()
  assert _largest_array(dense) >= 1024 * 1024


def _largest_tensor(mlir: str) -> int:
  dims = re.findall(r"tensor<((?:\d+x)+)\w+>", mlir)
  return max(int(np.prod([int(x) for x in d.split("x") if x])) for d in dims)


@pytest.mark.parametrize("impl,platform", [("mosaic_tpu", "tpu"), ("triton", "cuda")])
@pytest.mark.parametrize("s,sk,hq,hkv,blk,causal,segments", [
    (512, 512, 8, 2, 128, False, False), (500, 384, 4, 4, 128, True, True),
    (1000, 1000, 4, 2, 32, True, True),  # SparseD's default block of 32
    (32768, 32768, 32, 32, 128, False, False)])  # LLaDA-8B attention: no S x S array anywhere
def test_kernels_lower_for_their_platform(impl, platform, s, sk, hq, hkv, blk, causal,
                                          segments):
  """Mosaic TPU lowers for TPU, and Triton to its IR for CUDA, on CPU (``jax.export``)."""
  def f(q, k, seg):
    kw = dict(q_segment_ids=seg[:, :s], kv_segment_ids=seg[:, :sk]) if segments else {}
    return block_importance(q, k, blk, blk, causal=causal, implementation=impl,
                            interpret=False, **kw)

  args = (jax.ShapeDtypeStruct((1, s, hq, 128), jnp.bfloat16),
          jax.ShapeDtypeStruct((1, sk, hkv, 128), jnp.bfloat16),
          jax.ShapeDtypeStruct((1, max(s, sk)), jnp.int32))
  # Triton IR is serialised without a stability guarantee: lowering, not archiving, is checked.
  unstable = [jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")]
  exported = jax.export.export(jax.jit(f), platforms=[platform], disabled_checks=unstable)(*args)
  module = exported.mlir_module()
  target = {"tpu": "tpu_custom_call", "cuda": "__gpu$xla.gpu.triton"}[platform]
  assert module.count(f"stablehlo.custom_call @{target}") == 1
  assert exported.out_avals[0].shape == (1, hkv, -(-s // blk), -(-sk // blk))
  padded = lambda n: -(-n // blk) * blk
  assert _largest_tensor(module) == max(padded(s) * hq, padded(sk) * hkv) * 128  # q or k


def test_importing_pallas_kernels_does_not_import_jaxvlm():
  code = ("import sys, pallas_kernels, pallas_kernels.errors as e; "
          "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'jaxvlm'); "
          "assert not bad, bad; assert issubclass(e.ConfigError, ValueError); "
          "import jaxvlm.errors as j; assert j.ConfigError is e.ConfigError; "
          "assert j.ShapeError is e.ShapeError and issubclass(j.CheckpointError, j.JaxVLMError)")
  subprocess.run([sys.executable, "-c", code], check=True, env={"JAX_PLATFORMS": "cpu"})


def test_bad_inputs_raise_named_errors():
  q, k = _qk(_seed(), 1, 32, 32, 4, 2, 8)
  from jaxvlm.errors import ConfigError as JaxVLMConfigError
  with pytest.raises(ShapeError, match="num_kv_heads"):
    block_importance(q, k[:, :, :1].repeat(3, 2), 16, 16)
  with pytest.raises(ShapeError, match="q/k"):
    block_importance(q, k[..., :4], 16, 16)
  with pytest.raises(JaxVLMConfigError, match="block_q: got 0, expected a positive int"):
    block_importance(q, k, 0, 16)
  with pytest.raises(ConfigError, match="segment_ids"):
    block_importance(q, k, 16, 16, q_segment_ids=jnp.zeros((1, 32), jnp.int32))
  with pytest.raises(ConfigError, match="implementation: got 'mosaic_gpu', expected None or"):
    block_importance(q, k, 16, 16, implementation="mosaic_gpu")
