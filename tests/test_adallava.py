"""AdaLLaVA: exact-k Gumbel selection, layer skipping, budgeted K-of-N generation, FLOPs, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxvlm import models
from jaxvlm.errors import ConfigError
from jaxvlm.generation import generate
from jaxvlm.methods import adallava as ada
from jaxvlm.methods.adallava.flops import flops_per_sample, layer_flops
from jaxvlm.models import multimodal as mm
from jaxvlm.models.llama.modeling import LlamaConfig, LlamaForCausalLM

# compile-bound (tiny shapes, eager ops): XLA's cheap compile mode (conftest)
pytestmark = pytest.mark.usefixtures("fast_compile")

IMG, LAT, VOCAB, N, L = 120, 121, 128, 16, 6


@pytest.fixture(scope="module")
def model():
  hf = dict(model_type="llava", image_token_index=IMG,
            vision_config=dict(model_type="clip_vision_model", hidden_size=32,
                               num_attention_heads=2, intermediate_size=64, num_hidden_layers=1,
                               image_size=32, patch_size=8),
            text_config=dict(model_type="llama", hidden_size=48, num_attention_heads=4,
                             num_key_value_heads=2, intermediate_size=96, num_hidden_layers=L,
                             vocab_size=VOCAB))
  return ada.AdaLlava(models.from_config(hf, seed=0), ada.AdaConfig(LAT, prefix_layers=2),
                      nnx.Rngs(1))


def _prompts(rng, b=3, pad=(0, 2, 1)):
  rows = []
  for r in range(b):
    rows.append(np.r_[np.zeros(pad[r], int), 1, np.full(N, IMG), rng.integers(3, 100, 5 - pad[r])])
  ids = np.stack(rows)
  return ids, (np.arange(ids.shape[1])[None] >= np.asarray(pad[:b])[:, None]).astype(np.int32)


# ----- gumbel_topk ---------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 5, 12])
def test_gumbel_topk_exact_k_per_row(n):
  rng = np.random.default_rng(n)
  logits = jnp.asarray(rng.normal(size=(2, 9, n)), jnp.float32)
  k = rng.integers(0, n + 1, size=(2, 9))
  k[0, :3] = [0, 1, n]
  mask = ada.gumbel_topk(logits, jnp.asarray(k), 5.0, jax.random.key(n))
  m = np.asarray(mask)
  assert set(np.unique(m)) <= {0.0, 1.0}
  np.testing.assert_array_equal(m.sum(-1), k)
  soft = np.asarray(ada.gumbel_topk(logits, jnp.asarray(k), 5.0, jax.random.key(n), hard=False))
  np.testing.assert_allclose(soft.sum(-1), k, atol=1e-5)
  assert (soft >= 0).all()
  np.testing.assert_array_equal(np.asarray(ada.topk_mask(logits, jnp.asarray(k))).sum(-1), k)


def test_gumbel_topk_straight_through_gradient():
  logits = jax.random.normal(jax.random.key(0), (4, 8))
  w = jax.random.normal(jax.random.key(1), (4, 8))
  k = jnp.asarray([1, 3, 7, 2])
  g = jax.grad(lambda z: jnp.sum(ada.gumbel_topk(z, k, 5.0, jax.random.key(2)) * w))(logits)
  g = np.asarray(g)
  assert np.isfinite(g).all() and (np.abs(g).sum(-1) > 1e-4).all()


def test_gumbel_topk_no_noise_is_topk_and_errors():
  z = jnp.asarray([[0.1, 3.0, -1.0, 2.0]])
  np.testing.assert_array_equal(ada.gumbel_topk(z, 2, 1.0, None), [[0, 1, 0, 1]])
  with pytest.raises(ConfigError, match="k: got 5"):
    ada.gumbel_topk(z, 5, 1.0, None)
  with pytest.raises(ConfigError, match="tau"):
    ada.gumbel_topk(z, 1, 0.0, None)


# ----- layer gates: equality with a pruned model, and skipping ------------------------------------
def _lm(layers=5):
  cfg = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=8)
  return LlamaForCausalLM(cfg, rngs=nnx.Rngs(0))


def test_chosen_layers_equal_model_without_unchosen_layers():
  import dataclasses
  lm = _lm()
  keep = [0, 2, 3]
  plan = jnp.asarray([[1.0 if i in keep else 0.0 for i in range(5)]] * 2)
  small = _lm(len(keep))
  small.config = dataclasses.replace(lm.config, num_hidden_layers=len(keep))
  small.model, small.lm_head = lm.model, lm.lm_head  # same weights, then drop unchosen layers
  ids = jax.random.randint(jax.random.key(3), (2, 11), 3, 40)
  mask = jnp.asarray([[1] * 11, [0, 0] + [1] * 9])
  with jax.default_matmul_precision("highest"):
    full = lm(ids, mask, layer_gates=plan, skip_gated=True).logits
    dense = lm(ids, mask, layer_gates=plan, skip_gated=False).logits
    layers = lm.model.layers
    lm.model.layers = nnx.List([layers[i] for i in keep])
    pruned = small(ids, mask).logits
    lm.model.layers = layers
  np.testing.assert_allclose(full, pruned, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(dense, pruned, atol=1e-5, rtol=1e-5)


CALLS: list[int] = []


class _Counted(nnx.Module):
  """Wraps a decoder layer; every executed call appends its index to ``CALLS`` (debug callback)."""

  def __init__(self, layer, idx):
    self.layer, self.idx = layer, idx

  def __call__(self, *args, **kwargs):
    jax.debug.callback(lambda: CALLS.append(self.idx))
    return self.layer(*args, **kwargs)


def test_skipped_layers_are_not_computed():
  lm = _lm()
  log = CALLS
  log.clear()
  lm.model.layers = nnx.List([_Counted(l, i) for i, l in enumerate(lm.model.layers)])
  plan = jnp.asarray([[1, 0, 1, 0, 0], [1, 0, 0, 0, 0]], jnp.float32)
  ids = jnp.ones((2, 4), jnp.int32)

  run = nnx.jit(lambda lm, plan, skip: lm(ids, layer_gates=plan, skip_gated=skip).logits,
                static_argnums=2)
  jax.block_until_ready(run(lm, plan, True))
  assert sorted(log) == [0, 2]  # layer 2: one row chose it; 1, 3, 4: nobody did
  log.clear()
  jax.block_until_ready(run(lm, plan, False))
  assert sorted(log) == [0, 1, 2, 3, 4]


def test_generation_skips_unchosen_layers_in_prefill_and_decode(model):
  log = CALLS
  log.clear()
  layers = model.vlm.language_model.model.layers
  model.vlm.language_model.model.layers = nnx.List(
      [_Counted(l, i) for i, l in enumerate(layers)])
  try:
    ids, mask = _prompts(np.random.default_rng(0), b=1, pad=(0,))
    px = np.random.default_rng(1).normal(size=(1, 3, 32, 32)).astype(np.float32)
    inp = ada.budget_inputs(model, ids, mask, px, latency_budget=0.5, token_budget=0.5)
    out = generate(model, inp.input_ids, inp.attention_mask, 4, eos_token_id=None,
                   **inp.generate_kwargs())
    jax.block_until_ready(out.sequences)
    plan = ada.layer_plan(model, inp)[0]
  finally:
    model.vlm.language_model.model.layers = layers
  chosen = np.nonzero(plan)[0].tolist()
  assert len(chosen) == 3 and chosen[:2] == [0, 1]  # floor(6 * 0.5) layers, prefix 2 always on
  calls = [log.count(i) for i in range(L)]
  # prefill + 3 decode steps (+ the layer_plan prefill, which runs the prefix and chosen layers)
  assert calls == [5 if i in chosen else 0 for i in range(L)]


# ----- seed 004 regressions -------------------------------------------------------------------------
@pytest.mark.parametrize("budget", [1.0, 0.5, 0.01, [0.1, 0.6, 1.0]])
def test_budgeted_prompt_aligned_and_generation_is_prompt_plus_new(model, budget):
  rng = np.random.default_rng(0)
  ids, mask = _prompts(rng)
  px = rng.normal(size=(3, 3, 32, 32)).astype(np.float32)
  inp = ada.budget_inputs(model, ids, mask, px, latency_budget=budget, token_budget=budget)
  k = np.maximum(1, np.round(np.broadcast_to(budget, (3,)) * N)).astype(int)
  np.testing.assert_array_equal(inp.num_keep, k)
  valid = inp.attention_mask.astype(bool)
  np.testing.assert_array_equal(((inp.input_ids == IMG) & valid).sum(1), k)  # K ids per row
  assert inp.image_features.shape == (k.sum(), 48)
  lat_slot = np.argmax(inp.input_ids == LAT, axis=1)
  assert ((inp.input_ids == LAT).sum(1) == 1).all()
  # the latency token follows the row's K image tokens; its position = valid tokens before it
  np.testing.assert_array_equal(inp.input_ids[np.arange(3), lat_slot - 1], IMG)
  np.testing.assert_array_equal(inp.position_ids[np.arange(3), lat_slot],
                                [valid[r, :lat_slot[r]].sum() for r in range(3)])
  np.testing.assert_array_equal(inp.position_ids[np.arange(3), lat_slot], 1 + k)
  out = generate(model, inp.input_ids, inp.attention_mask, 5, eos_token_id=None,
                 **inp.generate_kwargs())
  seq = np.asarray(out.sequences)
  assert out.prompt_length == inp.input_ids.shape[1] and seq.shape[1] == out.prompt_length + 5
  np.testing.assert_array_equal(seq[:, :out.prompt_length], inp.input_ids)
  assert (np.asarray(out.num_generated) == 5).all()
  # teacher-forced forward (no cache) of prompt + generated under the same plan: same greedy ids
  full_ids = seq
  full_mask = np.concatenate([inp.attention_mask, np.ones((3, 5), np.int32)], 1)
  call, _ = model.prefill_inputs(full_ids, full_mask, image_features=inp.image_features,
                                 budget=inp.budget)
  logits = model(**call).logits
  np.testing.assert_array_equal(np.argmax(logits[:, out.prompt_length - 1:-1], -1),
                                seq[:, out.prompt_length:])


def test_insert_token_rows_and_extras():
  ids = np.asarray([[0, 0, 1, IMG, IMG, 5, 6], [1, IMG, IMG, IMG, 7, 8, 9], [0, 0, 0, 1, 4, 4, 4]])
  mask = (ids != 0).astype(np.int32)
  lab = np.arange(21).reshape(3, 7)
  out = mm.insert_token(ids, mask, LAT, after_id=IMG, extra={"labels": lab}, fill=-1)
  np.testing.assert_array_equal(out.index, [5, 4, 3])
  np.testing.assert_array_equal(out.input_ids[0], [0, 0, 1, IMG, IMG, LAT, 5, 6])
  np.testing.assert_array_equal(out.input_ids[2], [0, 0, 0, LAT, 1, 4, 4, 4])
  np.testing.assert_array_equal(out.attention_mask[0], [0, 0, 1, 1, 1, 1, 1, 1])
  np.testing.assert_array_equal(out.position_ids[0], [0, 0, 0, 1, 2, 3, 4, 5])
  np.testing.assert_array_equal(out.position_ids[1], np.arange(8))
  np.testing.assert_array_equal(out.extra["labels"][1], [7, 8, 9, 10, -1, 11, 12, 13])


# ----- FLOPs ---------------------------------------------------------------------------------------
def test_flops_hand_computed_and_strictly_decreasing_with_budget():
  cfg = LlamaConfig(vocab_size=10, hidden_size=4, intermediate_size=8, num_hidden_layers=2,
                    num_attention_heads=2, num_key_value_heads=1, head_dim=2)
  # proj 2*4*(2*2*2 + 2*1*2) = 96, mlp 2*3*4*8 = 192, attention 2*2*2*2 = 16 per pair
  assert layer_flops(cfg, 3, 6) == 3 * (96 + 192) + 16 * 6
  f = flops_per_sample(cfg, prompt_len=3, layers_executed=2, num_generated=3)
  head = 2 * 4 * 10
  assert f["prefill"] == 2 * (3 * 288 + 16 * 6) + head
  assert f["decode"] == [2 * (288 + 16 * 4) + head, 2 * (288 + 16 * 5) + head]
  assert f["total"] == f["prefill"] + sum(f["decode"])
  llava = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008,
                      num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                      head_dim=128)
  totals = []
  for b in np.arange(1.0, 0.05, -0.1):
    k = int(ada.visual_keep_count(b, 576))
    layers = max(int(ada.layer_count(b, 32)), 1)
    totals.append(flops_per_sample(llava, 40 + k + 1, layers, 16)["total"])
  assert all(a > b for a, b in zip(totals, totals[1:]))


# ----- bad input -----------------------------------------------------------------------------------
def test_bad_inputs_name_the_field(model):
  rng = np.random.default_rng(0)
  ids, mask = _prompts(rng)
  px = rng.normal(size=(3, 3, 32, 32)).astype(np.float32)
  for bad in (0.0, 1.5, [0.5, -0.1, 1.0]):
    with pytest.raises(ConfigError, match=r"budget: got .* expected values in \(0, 1\]"):
      ada.budget_inputs(model, ids, mask, px, latency_budget=bad, token_budget=bad)
  with pytest.raises(ConfigError, match=r"num_keep: got \[17, 17, 17\].*\[1, 16\]"):
    ada.budget_inputs(model, ids, mask, px, latency_budget=1.0, token_budget=1.0, num_keep=17)
  with pytest.raises(ConfigError, match=r"adallava.prefix_layers: got 6.*\[0, 5\]"):
    ada.AdaLlava(model.vlm, ada.AdaConfig(LAT, prefix_layers=6), nnx.Rngs(0))


def test_key_gated_attention_drops_keys_and_dropped_gates_get_gradient():
  from jaxvlm.layers.attention import attention, make_mask
  from jaxvlm.methods.adallava.training import key_gated_attention
  r = jax.random.split(jax.random.key(0), 4)
  q = jax.random.normal(r[0], (2, 6, 4, 8))
  k, v = (jax.random.normal(x, (2, 6, 2, 8)) for x in r[1:3])
  gate = jnp.asarray([[1, 1, 0, 1, 0, 1], [1, 0, 1, 1, 1, 1]], jnp.float32)
  mask = make_mask(jnp.arange(6), jnp.arange(6), jnp.ones((2, 6), bool), causal=True)
  with jax.default_matmul_precision("highest"):
    out = jax.jit(lambda g: key_gated_attention(g)(q, k, v, mask, 0))(gate)
    ref, _ = attention(q, k, v, mask & gate[:, None, None, :].astype(bool), causal=True)
  np.testing.assert_allclose(out, ref, atol=1e-5)
  w = jax.random.normal(r[3], out.shape)
  g = jax.jit(jax.grad(lambda g: jnp.sum(key_gated_attention(g)(q, k, v, mask, 0) * w)))(gate)
  assert np.isfinite(g).all() and abs(g[0, 2]) > 1e-6 and abs(g[1, 1]) > 1e-6  # dropped keys
