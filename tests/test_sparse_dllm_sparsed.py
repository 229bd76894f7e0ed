"""SparseD block selection, the sampler plan (dense / build / sparse loops), calibration importance."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxvlm.errors import ConfigError
from jaxvlm.generation import diffusion
from jaxvlm.layers.attention import attention
from jaxvlm.methods.sparse_dllm import keep_ratio, sparsed
from jaxvlm.models.llada import LLaDAConfig
from jaxvlm.models.llama.modeling import LlamaForCausalLM

MASK = 60


def _tiny_llada(seed=0, layers=2):
  cfg = LLaDAConfig(vocab_size=61, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=8, causal=False,
                    model_type="llada", mask_token_id=MASK)
  return LlamaForCausalLM(cfg, nnx.Rngs(seed))


@pytest.mark.parametrize("gen_start_block", [None, 5])
def test_select_blocks(gen_start_block):
  rng = np.random.default_rng()
  imp = jnp.asarray(rng.random((2, 3, 6, 8)), jnp.float32)
  keep = np.array([0.1, 0.3, 0.55])
  mask = np.asarray(sparsed.select_blocks(imp, keep, gen_start_block=gen_start_block))
  imp = np.asarray(imp)
  for h, kh in enumerate(keep):
    n_all = math.ceil(kh * 8)
    top = np.argsort(-imp[:, h], axis=-1)[..., :n_all]
    expect = np.zeros_like(mask[:, h])
    np.put_along_axis(expect, top, True, axis=-1)
    if gen_start_block is not None:
      expect[..., gen_start_block:] = False
      n_gen = math.ceil(kh * (8 - gen_start_block))
      gen_top = gen_start_block + np.argsort(-imp[:, h, :, gen_start_block:], -1)[..., :n_gen]
      np.put_along_axis(expect, gen_top, True, axis=-1)
    np.testing.assert_array_equal(mask[:, h], expect)


def _masked_attention_fn(masks, block):
  """Dense attention with the token-level mask implied by block masks [L, B, Hkv, nQ, nK]."""
  def fn(q, k, v, mask, layer):
    blocks = jnp.repeat(masks[layer], q.shape[2] // k.shape[2], axis=1)
    tok = jnp.repeat(jnp.repeat(blocks, block, axis=2), block, axis=3)
    return attention(q, k, v, tok[:, :, :q.shape[1], :k.shape[1]])[0]
  return fn


def test_sparsed_plan_phases():
  """Dense loop, then cycles of one mask build + sparse steps; sparse = block-masked dense."""
  model = _tiny_llada(int(np.random.default_rng().integers(1000)))
  graphdef, params = nnx.split(model)
  cfg = sparsed.SparseDConfig(steps=10, block_size=4, skip=0.3, gen_start=12, refresh_every=3)
  geom = diffusion.Geometry(12, 10, 10, 10)
  plan = sparsed.SparseDPlan(graphdef, cfg)
  dense_ph, sparse_ph = plan.phases(geom)
  assert cfg.switch_step == 3 and cfg.build_steps == [3, 6, 9]
  assert dense_ph.first is None and (dense_ph.starts, dense_ph.stop) == ((0,), 3)
  assert sparse_ph.first is not None and (sparse_ph.starts, sparse_ph.stop) == ((3, 6, 9), 10)
  keep = np.array([[0.3, 0.6], [0.5, 0.2]])
  tokens = jnp.asarray(np.random.default_rng().integers(0, MASK, (2, 22)))
  state = plan.init_state(geom, 2, keep, params)
  with jax.default_matmul_precision("highest"):
    rows = model(tokens).logits[:, 12:22]
    before, s0 = jax.jit(dense_ph.fn)(params, tokens, state, jnp.int32(1))
    at, s1 = jax.jit(sparse_ph.first)(params, tokens, state, jnp.int32(3))
    after, s2 = jax.jit(sparse_ph.fn)(params, tokens, s1, jnp.int32(4))
    expected = model(tokens, attention_fn=_masked_attention_fn(s1.masks, 4)).logits[:, 12:22]
  np.testing.assert_allclose(before, rows, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(at, rows, rtol=1e-5, atol=1e-5)
  assert bool(jnp.all(s0.masks)) and not bool(jnp.all(s1.masks))
  np.testing.assert_array_equal(s2.masks, s1.masks)
  np.testing.assert_allclose(after, expected, rtol=1e-4, atol=1e-4)
  # The precomputed kernel selection lists exactly the masked blocks.
  np.testing.assert_array_equal(s1.counts, np.asarray(s1.masks).sum(-1))
  # Isolated selection: every query block keeps ceil(keep * 3) of the 3 generation blocks.
  gen_counts = np.asarray(s1.masks)[..., 3:].sum(-1)
  np.testing.assert_array_equal(gen_counts, np.broadcast_to(np.ceil(keep * 3)[:, None, :, None],
                                                            gen_counts.shape))


def test_window_selection_rows():
  """A query window keeps the union of the mask rows its tiles overlap."""
  masks = jnp.asarray(np.random.default_rng().random((1, 2, 5, 5)) < 0.4)
  sel = sparsed.window_selection(masks, 6, 5, 4)  # positions 6..10: mask rows 1 and 2
  got = np.asarray(sel.block_mask(5))
  np.testing.assert_array_equal(got[:, :, 0], np.asarray(masks[:, :, 1] | masks[:, :, 2]))
  aligned = sparsed.window_selection(masks, 8, 8, 4)  # rows 2 and 3 exactly
  np.testing.assert_array_equal(np.asarray(aligned.block_mask(5)), np.asarray(masks[:, :, 2:4]))


def test_sparse_sampler_keep_one_equals_dense():
  model = _tiny_llada(3)
  graphdef, params = nnx.split(model)
  prompt = np.random.default_rng().integers(0, MASK, (2, 8))
  cfg = sparsed.SparseDConfig(steps=8, block_size=4, skip=0.2, gen_start=8)
  sample = dict(steps=8, gen_length=8, block_length=4, mask_id=MASK)
  plan = sparsed.SparseDPlan(graphdef, cfg)
  with jax.default_matmul_precision("highest"):
    dense = diffusion.llada_generate(diffusion.model_logits_fn(graphdef), params, prompt,
                                     jax.random.key(0), **sample)
    full = diffusion.llada_generate(plan, params, prompt, jax.random.key(0), **sample,
                                    state=np.ones((2, 2)))
    sparse = diffusion.llada_generate(plan, params, prompt, jax.random.key(0), **sample,
                                      state=np.full((2, 2), 0.2))
  np.testing.assert_array_equal(full.tokens, dense.tokens)
  assert sparsed.attention_flops_saved(full.state.masks, cfg)["saved_total"] == 0.0
  saved = sparsed.attention_flops_saved(sparse.state.masks, cfg)
  assert 0.0 < saved["saved_total"] < saved["saved_per_sparse_step"] < 1.0
  tokens = np.asarray(sparse.tokens)
  assert not np.any(tokens == MASK)
  np.testing.assert_array_equal(tokens[:, :8], prompt)


def test_bad_settings():
  with pytest.raises(ConfigError, match="refresh_every"):
    sparsed.SparseDConfig(steps=8, refresh_every=0)
  with pytest.raises(ConfigError, match="skip"):
    sparsed.SparseDConfig(steps=8, skip=1.0)
  for select in (0.0, 1.2):
    with pytest.raises(ConfigError, match="select"):
      keep_ratio.adaptive_keep_ratios(np.random.default_rng().random((2, 2)), select)


def test_calibrate_head_importance():
  model = _tiny_llada(5, layers=3)
  prompts = np.random.default_rng().integers(0, MASK, (2, 18))
  imp = sparsed.calibrate_head_importance(model, prompts, block_size=4, select=0.4)
  assert imp.shape == (3, 2) and np.all(imp > 0.0) and np.all(imp < 1.0)
  assert np.allclose(sparsed.calibrate_head_importance(model, prompts, 4, select=1.0), 0.0,
                     atol=1e-5)
