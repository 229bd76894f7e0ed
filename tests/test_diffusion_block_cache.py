"""Block-wise KV cache (prefix / DualCache), its SparseD composition, threshold decoding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxvlm.errors import ConfigError
from jaxvlm.generation import block_cache, diffusion
from jaxvlm.methods.sparse_dllm import sparsed
from jaxvlm.models.llada import LLaDAConfig
from jaxvlm.models.llama.modeling import LlamaForCausalLM

MASK = 60


def _tiny_llada(seed):
  cfg = LLaDAConfig(vocab_size=61, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=8, causal=False,
                    model_type="llada", mask_token_id=MASK)
  return LlamaForCausalLM(cfg, nnx.Rngs(seed))


def _generate(dream, plan, params, prompt, **kw):
  sample = dict(steps=8, gen_length=8, block_length=4, mask_id=MASK, **kw)
  if dream:
    return diffusion.dream_generate(plan, params, prompt, jax.random.key(0), alg="maskgit_plus",
                                    **sample)
  return diffusion.llada_generate(plan, params, prompt, jax.random.key(0), **sample)


@pytest.mark.parametrize("dream,mode", [(False, "prefix"), (True, "dual")])
def test_cache_refreshed_every_step_is_exact(dream, mode):
  graphdef, params = nnx.split(_tiny_llada(int(np.random.default_rng().integers(1000))))
  prompt = np.random.default_rng().integers(0, MASK, (2, 8))
  plan = block_cache.CachedPlan(graphdef, block_cache.CacheConfig(mode, refresh_every=1))
  (phase,) = plan.phases(diffusion.Geometry(8, 8, 4, 4))
  assert phase.starts == (0, 1, 2, 3) and phase.first is not None
  with jax.default_matmul_precision("highest"):
    exact = _generate(dream, diffusion.model_logits_fn(graphdef), params, prompt)
    out = _generate(dream, plan, params, prompt)
  np.testing.assert_array_equal(out.tokens, exact.tokens)
  assert out.state.k.shape == (2, 2, 16, 2, 8)


@pytest.mark.parametrize("shift", [0, 1])
def test_cached_step_on_fresh_cache_equals_full_forward(shift):
  """A window step over a cache built from the same tokens reproduces the full forward's rows."""
  model = _tiny_llada(int(np.random.default_rng().integers(1000)))
  graphdef, params = nnx.split(model)
  geom = diffusion.Geometry(6, 12, 4, 6, shift)  # blocks start at 6, 10, 14
  tokens = jnp.asarray(np.random.default_rng().integers(0, MASK + 1, (2, 18)))
  with jax.default_matmul_precision("highest"):
    full = model(tokens).logits
    for mode in block_cache.MODES:
      plan = block_cache.CachedPlan(graphdef, block_cache.CacheConfig(mode))
      (phase,) = plan.phases(geom)
      _, state = jax.jit(phase.first)(params, tokens, plan.init_state(geom, 2, (), params), 0)
      window = jax.jit(phase.fn)
      for step in (1, 3, 5):
        logits, _ = window(params, tokens, state, step)
        start = geom.row_start(step)
        np.testing.assert_allclose(logits, full[:, start:start + 4], rtol=1e-4, atol=1e-4)


def test_sparse_cached_step_on_fresh_cache_equals_sparse_refresh():
  """With the window on mask tiles, the sparse cached step equals the sparse full pass."""
  graphdef, params = nnx.split(_tiny_llada(int(np.random.default_rng().integers(1000))))
  geom = diffusion.Geometry(8, 8, 4, 4)
  tokens = jnp.asarray(np.random.default_rng().integers(0, MASK + 1, (2, 16)))
  scfg = sparsed.SparseDConfig(steps=4, block_size=4, skip=0.0, gen_start=8)
  plan = sparsed.SparseDPlan(graphdef, scfg, block_cache.CacheConfig("dual"))
  build, sparse = plan.phases(geom)
  with jax.default_matmul_precision("highest"):
    _, state = jax.jit(build.first)(params, tokens, plan.init_state(geom, 2, np.full((2, 2), 0.4),
                                                                     params), 0)
    refreshed, state2 = jax.jit(sparse.first)(params, tokens, state, 2)
    cached, _ = jax.jit(sparse.fn)(params, tokens, state2, 3)
  assert not bool(jnp.all(state.inner.masks))
  np.testing.assert_array_equal(state2.inner.masks, state.inner.masks)
  np.testing.assert_allclose(cached, refreshed, rtol=1e-4, atol=1e-4)


def test_cached_sparse_refreshed_every_step_equals_sparse():
  graphdef, params = nnx.split(_tiny_llada(int(np.random.default_rng().integers(1000))))
  prompt = np.random.default_rng().integers(0, MASK, (2, 8))
  scfg = sparsed.SparseDConfig(steps=8, block_size=4, skip=0.2, gen_start=8)
  keep = np.full((2, 2), 0.3)
  with jax.default_matmul_precision("highest"):
    sparse = _generate(False, sparsed.SparseDPlan(graphdef, scfg), params, prompt, state=keep)
    cached = _generate(False, sparsed.SparseDPlan(graphdef, scfg, block_cache.CacheConfig(
        "dual", refresh_every=1)), params, prompt, state=keep)
  np.testing.assert_array_equal(cached.tokens, sparse.tokens)
  np.testing.assert_array_equal(cached.state.inner.masks, sparse.state.masks)


VOCAB, DIM = 50, 16


def _toy(sharpness):
  """Stateless bidirectional toy model: ``sharpness`` on its argmax token, 0 elsewhere, so the
  top probability is e^s / (e^s + VOCAB - 2) at every position (about 1 for s = 100, about
  1 / (VOCAB - 1) for s = 0.01)."""
  rng = np.random.default_rng(7)
  emb = jnp.asarray(rng.normal(size=(VOCAB, DIM)), jnp.float32)
  out = jnp.asarray(rng.normal(size=(DIM, VOCAB)), jnp.float32)

  def fn(params, tokens):
    h = jnp.tanh(emb[tokens] + emb[tokens].mean(axis=1, keepdims=True))
    peak = jax.nn.one_hot(jnp.argmax((h @ out)[..., :VOCAB - 1], -1), VOCAB)
    return (sharpness * peak).at[..., VOCAB - 1].set(-1e4)

  return diffusion.stateless(fn)


@pytest.mark.parametrize("dream", [False, True])
def test_threshold_decoding(dream):
  """Fast-dLLM rule at steps == gen_length: top-1 plus all above the threshold, >= 1 per step
  while the block has masks, no forward pass once it is complete."""
  prompt = np.random.default_rng().integers(0, VOCAB - 1, (2, 5))
  kw = dict(steps=12, gen_length=12, block_length=4, mask_id=VOCAB - 1, threshold=0.9)
  gen = diffusion.dream_generate if dream else diffusion.llada_generate
  extra = dict(alg="maskgit_plus") if dream else {}
  for sharpness, expect_all_at_once in ((100.0, True), (0.01, False)):
    out = gen(_toy(sharpness), None, prompt, jax.random.key(0), **kw, **extra)
    tokens, counts = np.asarray(out.tokens), np.asarray(out.transfer_counts)
    assert not np.any(tokens == VOCAB - 1)
    per_block = counts.reshape(3, 4, 2)
    assert np.all(per_block.sum(1) == 4)
    ran = per_block > 0
    assert np.all(ran[:, 0])  # the first step of a block always unmasks
    assert np.all(ran[:, 1:] <= ran[:, :-1])  # once a block is done, no step runs
    if expect_all_at_once:  # confident: the whole block in its first step
      np.testing.assert_array_equal(per_block[:, 0], 4)
    else:  # nothing passes 0.9: exactly one per step
      np.testing.assert_array_equal(per_block, 1)


def test_bad_input_names_the_field():
  fn = _toy(1.0)
  prompt = np.zeros((1, 3), np.int32)
  kw = dict(steps=4, gen_length=8, block_length=4, mask_id=VOCAB - 1)
  for threshold in (0.0, 1.5, -0.2):
    with pytest.raises(ConfigError, match="threshold"):
      diffusion.llada_generate(fn, None, prompt, jax.random.key(0), threshold=threshold, **kw)
    with pytest.raises(ConfigError, match="threshold"):
      diffusion.dream_generate(fn, None, prompt, jax.random.key(0), threshold=threshold,
                               alg="maskgit_plus", **kw)
  with pytest.raises(ConfigError, match="gen_length"):
    diffusion.dream_generate(fn, None, prompt, jax.random.key(0), steps=4, gen_length=10,
                             block_length=4, mask_id=VOCAB - 1)
  for bad in (0, -1, 2.5):
    with pytest.raises(ConfigError, match="refresh_every"):
      block_cache.CacheConfig("dual", refresh_every=bad)
  with pytest.raises(ConfigError, match="cache.mode"):
    block_cache.CacheConfig("suffix")
