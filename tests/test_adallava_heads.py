"""AdaLLaVA head granularity: units (KV-head groups + MLP rows) inside chosen layers.

The unit rule, exact-g Gumbel picks per chosen layer, a unit-gated forward against a NumPy layer
whose weights are sliced by hand, gathered (shared-plan) inference against the masked
computation and against a teacher-forced forward, the reduced matmul widths in the traced
program, FLOPs per unit and the config errors.
"""

from __future__ import annotations

import re

import jax
import jax.extend.core as jcore
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxvlm import models
from jaxvlm.errors import ConfigError
from jaxvlm.generation import generate
from jaxvlm.methods import adallava as ada
from jaxvlm.methods.adallava.flops import flops_per_sample, layer_flops
from jaxvlm.methods.adallava.units import UnitGate
from jaxvlm.models.llama.modeling import LlamaConfig, LlamaForCausalLM

# compile-bound (tiny shapes, eager ops): XLA's cheap compile mode (conftest)
pytestmark = pytest.mark.usefixtures("fast_compile")

IMG, LAT, VOCAB, N, L, PREFIX = 120, 121, 128, 16, 5, 2
H, HEADS, G, D, INTER = 48, 8, 4, 4, 96  # r = 2 q heads and 24 MLP rows per unit


def _hf(**text):
  return dict(model_type="llava", image_token_index=IMG,
              vision_config=dict(model_type="clip_vision_model", hidden_size=32,
                                 num_attention_heads=2, intermediate_size=64, num_hidden_layers=1,
                                 image_size=32, patch_size=8),
              text_config=dict(dict(model_type="llama", hidden_size=H, num_attention_heads=HEADS,
                                    num_key_value_heads=G, head_dim=D, intermediate_size=INTER,
                                    num_hidden_layers=L, vocab_size=VOCAB), **text))


def _ada(shared: bool, **cfg):
  return ada.AdaLlava(models.from_config(_hf(), seed=0),
                      ada.AdaConfig(LAT, prefix_layers=PREFIX, granularity="head",
                                    shared_plan=shared, **cfg), nnx.Rngs(1))


@pytest.fixture(scope="module")
def shared():
  return _ada(True)


def _prompts(b=3, seed=0):
  rng = np.random.default_rng(seed)
  ids = np.stack([np.r_[1, np.full(N, IMG), rng.integers(3, 100, 5)] for _ in range(b)])
  px = rng.normal(size=(b, 3, 32, 32)).astype(np.float32)
  return ids, np.ones_like(ids), px


# ----- the unit rule and exact-g selection --------------------------------------------------------
def test_unit_counts_rule_by_hand():
  # L = 5, G = 4, prefix 2: U = floor(20 b) - 8, n = ceil(U / 4), g = ceil(U / n)
  b = np.asarray([1.0, 0.7, 0.6, 0.55, 0.5, 0.45, 0.4, 0.1], np.float32)
  n, g = ada.unit_counts(b, L, G, PREFIX)
  np.testing.assert_array_equal(n, [3, 2, 1, 1, 1, 1, 0, 0])  # U = 12, 6, 4, 3, 2, 1, 0, 0
  np.testing.assert_array_equal(g, [4, 3, 4, 3, 2, 1, 0, 0])


def test_plan_picks_exactly_g_units_in_each_of_n_layers():
  model = _ada(False)
  budget = jnp.asarray([1.0, 0.7, 0.55, 0.45, 0.3, 0.7])
  hidden = jax.random.normal(jax.random.key(0), (6, H))
  n, g = (np.asarray(x) for x in model.unit_counts(budget))
  plan_fn = {train: nnx.jit(lambda m, h, b, key, train=train: m.plan(h, b, rng=key, train=train))
             for train in (True, False)}  # compiled, as in training and inference
  for train in (True, False):
    plan = np.asarray(plan_fn[train](model, hidden, budget, jax.random.key(1)))
    assert plan.shape == (6, L - PREFIX, G) and set(np.unique(plan)) <= {0.0, 1.0}
    per_layer = plan.sum(-1)
    for r in range(6):
      chosen = per_layer[r][per_layer[r] > 0]
      assert len(chosen) == n[r] and (chosen == g[r]).all(), (r, per_layer[r])
  # Gumbel noise: the two rows of budget 0.7 draw different units
  plans = [np.asarray(plan_fn[True](model, hidden[:1].repeat(2, 0), budget[1:2].repeat(2),
                                    jax.random.key(s))) for s in range(4)]
  assert any((p[0] != p[1]).any() for p in plans)


def test_straight_through_gradient_reaches_both_schedulers():
  model = _ada(False)
  ids, mask, px = _prompts(2)
  # 1 layer, 3 of 4 units
  inp = ada.budget_inputs(model, ids, mask, px, latency_budget=0.55, token_budget=0.55)
  call, _ = model.prefill_inputs(inp.input_ids, inp.attention_mask,
                                 image_features=inp.image_features, budget=inp.budget)

  def loss(m):
    out = m(**call, rng=jax.random.key(0), train=True)
    return jnp.sum(out.logits[:, -1] ** 2)

  grads = nnx.jit(nnx.grad(loss))(model)
  for head in (grads.scheduler, grads.unit_scheduler):
    g = np.asarray(head.kernel[...])
    assert np.isfinite(g).all() and np.abs(g).sum() > 0


# ----- unit-gated layers against NumPy with hand-sliced weights -----------------------------------
def _rms(x, norm, eps):
  return np.asarray(norm.weight[...], np.float64) * x / np.sqrt((x * x).mean(-1, keepdims=True)
                                                                + eps)


def _rope(x, cos, sin):
  half = x.shape[-1] // 2
  rot = np.concatenate([-x[..., half:], x[..., :half]], -1)
  return x * cos[:, :, None] + rot * sin[:, :, None]


def _np_layer(layer, x, cos, sin, units, weights):
  """One decoder layer in float64 NumPy running only KV-head groups ``units``, unit ``j``'s head
  outputs and MLP rows weighted by ``weights[:, j]``; every weight sliced by explicit indices."""
  cfg = layer.self_attn.cfg
  r, w = cfg.num_attention_heads // cfg.num_key_value_heads, cfg.intermediate_size // G
  W = lambda lin: np.asarray(lin.kernel[...], np.float64)
  a, m = layer.self_attn, layer.mlp
  q_cols = [c for u in units for c in range(u * r * D, (u + 1) * r * D)]
  kv_cols = [c for u in units for c in range(u * D, (u + 1) * D)]
  mlp_cols = [c for u in units for c in range(u * w, (u + 1) * w)]
  b, s, _ = x.shape
  h = _rms(x, layer.input_layernorm, cfg.rms_norm_eps)
  q = _rope((h @ W(a.q_proj)[:, q_cols]).reshape(b, s, -1, D), cos, sin)
  k = _rope((h @ W(a.k_proj)[:, kv_cols]).reshape(b, s, -1, D), cos, sin)
  v = (h @ W(a.v_proj)[:, kv_cols]).reshape(b, s, -1, D)
  out = np.zeros_like(q)
  causal = np.tril(np.ones((s, s), bool))
  for j in range(q.shape[2]):
    scores = np.einsum("bqd,bkd->bqk", q[:, :, j], k[:, :, j // r]) / np.sqrt(D)
    p = np.exp(np.where(causal, scores, -np.inf) - scores.max(-1, keepdims=True))
    p = p / p.sum(-1, keepdims=True)
    out[:, :, j] = np.einsum("bqk,bkd->bqd", p, v[:, :, j // r]) * weights[:, j // r, None, None]
  x = x + out.reshape(b, s, -1) @ W(a.o_proj)[q_cols]
  h = _rms(x, layer.post_attention_layernorm, cfg.rms_norm_eps)
  gate = h @ W(m.gate_proj)[:, mlp_cols]
  act = gate / (1 + np.exp(-gate)) * (h @ W(m.up_proj)[:, mlp_cols])
  return x + (act * np.repeat(weights, w, axis=1)[:, None]) @ W(m.down_proj)[mlp_cols]


def _lm():
  cfg = LlamaConfig(vocab_size=40, hidden_size=H, intermediate_size=INTER, num_hidden_layers=3,
                    num_attention_heads=HEADS, num_key_value_heads=G, head_dim=D)
  return LlamaForCausalLM(cfg, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("gathered", [True, False])
def test_unit_gated_forward_equals_numpy_with_sliced_weights(gathered):
  lm = _lm()
  units = [3, 1]  # gathered in this order
  weights = np.zeros((2, G))
  weights[:, units] = [[1.0, 1.0], [0.5, 1.0]]  # row 1: unit 3 at half weight

  def gates(i, x):
    if i == 0:
      return None  # runs whole
    if i == 1:
      return UnitGate(jnp.asarray(weights, jnp.float32),
                      jnp.asarray(units, jnp.int32) if gathered else None)
    return UnitGate(jnp.zeros((2, G)))  # no unit: skipped

  ids = jax.random.randint(jax.random.key(3), (2, 7), 3, 40)
  with jax.default_matmul_precision("highest"):
    logits = lm(ids, layer_gates=gates, skip_gated=True).logits
  pos = jnp.broadcast_to(jnp.arange(7), (2, 7))
  cos, sin = (np.asarray(t, np.float64) for t in lm.model.rope_tables(pos))
  x = np.asarray(lm.model.embed_tokens.embedding[...], np.float64)[np.asarray(ids)]
  layers, eps = lm.model.layers, lm.config.rms_norm_eps
  x = _np_layer(layers[0], x, cos, sin, list(range(G)), np.ones((2, G)))
  x = _np_layer(layers[1], x, cos, sin, units, weights[:, units])
  ref = _rms(x, lm.model.norm, eps) @ np.asarray(lm.lm_head.kernel[...], np.float64)
  np.testing.assert_allclose(logits, ref, atol=2e-5, rtol=1e-4)
  # and not what the whole layer 1 gives
  whole = _np_layer(layers[1], x, cos, sin, list(range(G)), np.ones((2, G)))
  assert np.abs(_rms(whole, lm.model.norm, eps) @ np.asarray(lm.lm_head.kernel[...]) - ref).max() \
      > 1e-3


def test_biases_and_lora_gathered_equals_masked_and_whole_layer():
  from jaxvlm.layers import lora
  from jaxvlm.layers.linear import Linear
  cfg = LlamaConfig(vocab_size=40, hidden_size=H, intermediate_size=INTER, num_hidden_layers=1,
                    num_attention_heads=HEADS, num_key_value_heads=G, head_dim=D, qkv_bias=True,
                    o_bias=True, mlp_bias=True)
  lm = LlamaForCausalLM(cfg, rngs=nnx.Rngs(0))
  lora.apply_lora(lm, ("q_proj", "v_proj", "o_proj", "down_proj"), rank=4, alpha=8.0)
  rng = np.random.default_rng(0)
  for _, m in nnx.iter_modules(lm):  # every bias and LoRA factor non-zero
    if isinstance(m, Linear) and m.bias is not None:
      m.bias[...] = jnp.asarray(rng.normal(size=m.bias.shape), jnp.float32)
    if isinstance(m, lora.LoRALinear):
      m.lora_b[...] = jnp.asarray(rng.normal(size=m.lora_b.shape) * 0.1, jnp.float32)
  layer = lm.model.layers[0]
  x = jnp.asarray(rng.normal(size=(3, 5, H)), jnp.float32)
  cos, sin = lm.model.rope_tables(jnp.broadcast_to(jnp.arange(5), (3, 5)))
  weights = jnp.asarray([[0, 1, 0, 1], [0, 0.5, 0, 1], [0, 0, 0, 0]], jnp.float32)
  run = lambda gate: np.asarray(gate(layer, x, cos, sin, None, None)[0])
  with jax.default_matmul_precision("highest"):
    gathered = run(UnitGate(weights, jnp.asarray([3, 1], jnp.int32)))
    masked = run(UnitGate(weights))
    ones = run(UnitGate(jnp.ones((3, G))))
    whole = np.asarray(layer(x, cos, sin, None, None)[0])
  np.testing.assert_allclose(gathered, masked, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(ones, whole, atol=1e-5, rtol=1e-5)
  np.testing.assert_array_equal(masked[2], np.asarray(x[2]))  # no unit: no bias either
  assert np.abs(gathered[0] - whole[0]).max() > 1e-3


def _dot_kernels(jaxpr) -> list[tuple[int, ...]]:
  """Shapes of the 2-D right operands (weight matrices) of every ``dot_general`` in a jaxpr,
  sub-jaxprs (jit, cond branches, while bodies) included."""
  shapes = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general" and eqn.invars[1].aval.ndim == 2:
      shapes.append(tuple(eqn.invars[1].aval.shape))
    for p in eqn.params.values():
      for sub in p if isinstance(p, (list, tuple)) else (p,):
        if isinstance(sub, jcore.ClosedJaxpr):
          shapes += _dot_kernels(sub.jaxpr)
        elif isinstance(sub, jcore.Jaxpr):
          shapes += _dot_kernels(sub)
  return shapes


def test_gathered_layer_matmuls_have_the_reduced_width():
  lm = _lm()
  layer = lm.model.layers[1]
  x = jnp.ones((2, 5, H))
  cos, sin = lm.model.rope_tables(jnp.broadcast_to(jnp.arange(5), (2, 5)))
  run = lambda gate: jax.make_jaxpr(lambda x: gate(layer, x, cos, sin, None, None))(x)
  gathered = _dot_kernels(run(UnitGate(jnp.ones((2, G)), jnp.asarray([2], jnp.int32))).jaxpr)
  # one unit: 2 q heads (8 columns), 1 k/v head (4), o_proj rows 8, 24 MLP rows
  assert sorted(gathered) == sorted([(H, 8), (H, 4), (H, 4), (8, H), (H, 24), (H, 24), (24, H)])
  masked = _dot_kernels(run(UnitGate(jnp.ones((2, G)))).jaxpr)
  assert sorted(masked) == sorted([(H, 32), (H, 16), (H, 16), (32, H), (H, INTER), (H, INTER),
                                   (INTER, H)])


# ----- AdaLlava: gathered shared-plan inference --------------------------------------------------
def _step(model, inp, units):
  """Prefill + one decode step (the prefill's greedy token): both steps' last logits and the plan,
  as one compiled program (as generation runs them) instead of op-by-op dispatch."""
  graphdef, state = nnx.split(model)

  @jax.jit
  def run(state, ids, mask, kw):
    model = nnx.merge(graphdef, state)
    call, dec = model.prefill_inputs(ids, mask, **kw)
    cache = model.init_cache(ids.shape[0], ids.shape[1] + 2)
    out = model(cache=cache, logits_to_keep=1, **call)
    tok = jnp.argmax(out.logits[:, -1], -1)[:, None]
    nxt = model(input_ids=tok, attention_mask=jnp.ones_like(tok), cache=out.cache,
                logits_to_keep=1, **dec)
    return out.logits[:, -1], nxt.logits[:, -1], out.cache.plan

  kw = dict(image_features=inp.image_features, budget=jnp.asarray(inp.budget),
            position_ids=jnp.asarray(inp.position_ids), units=units)
  return tuple(np.asarray(x) for x in run(state, inp.input_ids, inp.attention_mask, kw))


@pytest.mark.parametrize("budget,units", [(0.7, 3), ([0.55, 0.5, 0.45], 3), (0.45, 1)])
def test_gathered_inference_equals_masked(shared, budget, units):
  ids, mask, px = _prompts()
  inp = ada.budget_inputs(shared, ids, mask, px, latency_budget=budget, token_budget=budget)
  assert inp.units == units  # the largest g of the rows' budgets
  with jax.default_matmul_precision("highest"):
    got = _step(shared, inp, ada.UnitCount(inp.units))
    ref = _step(shared, inp, None)
  np.testing.assert_array_equal(got[2], ref[2])  # the same plan
  n, g = (np.asarray(x) for x in shared.unit_counts(inp.budget))
  per_layer = got[2][:, PREFIX:].sum(-1)
  assert all(sorted(per_layer[r])[::-1][:n[r]] == [g[r]] * n[r] for r in range(3))
  np.testing.assert_allclose(got[0], ref[0], atol=1e-5, rtol=1e-5)  # prefill
  np.testing.assert_allclose(got[1], ref[1], atol=1e-5, rtol=1e-5)  # decode from the cache


def test_gathered_generation_equals_teacher_forced_forward(shared):
  ids, mask, px = _prompts()
  budgets = [0.55, 0.7, 0.45]
  inp = ada.budget_inputs(shared, ids, mask, px, latency_budget=budgets, token_budget=budgets)
  assert inp.units == 3
  out = generate(shared, inp.input_ids, inp.attention_mask, 5, eos_token_id=None,
                 **inp.generate_kwargs())
  seq, p = np.asarray(out.sequences), out.prompt_length
  full_mask = np.concatenate([inp.attention_mask, np.ones((3, 5), np.int32)], 1)
  call, _ = shared.prefill_inputs(seq, full_mask, image_features=inp.image_features,
                                  budget=inp.budget)
  graphdef, state = nnx.split(shared)  # no cache, no gathering: every unit computed, masked
  logits = jax.jit(lambda st, call: nnx.merge(graphdef, st)(**call).logits)(state, call)
  np.testing.assert_array_equal(np.argmax(logits[:, p - 1:-1], -1), seq[:, p:])


def test_generation_traces_only_the_gathered_widths(shared):
  ids, mask, px = _prompts(2)
  # 2 layers of 3 units after the prefix
  inp = ada.budget_inputs(shared, ids, mask, px, latency_budget=0.7, token_budget=0.7)
  kw = inp.generate_kwargs()

  def dots(**kw):
    fn = lambda: generate(shared, inp.input_ids, inp.attention_mask, 3, eos_token_id=None, **kw)
    return _dot_kernels(jax.make_jaxpr(fn)().jaxpr)

  gathered = dots(**kw)
  # prefill + decode body each trace every layer once: the 2 prefix layers whole (gate + up
  # kernels [H, I]), the other 3 with 3 of 4 units ([H, 72]); never a whole unit layer
  assert gathered.count((H, INTER)) == 2 * 2 * PREFIX
  assert gathered.count((H, 3 * INTER // G)) == 2 * 2 * (L - PREFIX)
  assert gathered.count((H, HEADS * D)) == 2 * PREFIX and gathered.count((H, 3 * 2 * D)) == 6
  masked = dots(**{k: v for k, v in kw.items() if k != "units"})
  assert masked.count((H, INTER)) == 2 * 2 * L and masked.count((H, 3 * INTER // G)) == 0


def _eqns(jaxpr):
  """Every equation of a jaxpr, sub-jaxprs (cond branches, loop bodies) included."""
  for eqn in jaxpr.eqns:
    yield eqn
    for p in eqn.params.values():
      for sub in p if isinstance(p, (list, tuple)) else (p,):
        if isinstance(sub, jcore.ClosedJaxpr):
          yield from _eqns(sub.jaxpr)
        elif isinstance(sub, jcore.Jaxpr):
          yield from _eqns(sub)


def test_decode_step_copies_no_weights_and_no_full_head_cache(shared):
  ids, mask, px = _prompts()
  inp = ada.budget_inputs(shared, ids, mask, px, latency_budget=0.45, token_budget=1.0)
  assert inp.units == 1  # 1 of G = 4 units in each chosen layer
  units = ada.UnitCount(inp.units)
  call, dec = shared.prefill_inputs(inp.input_ids, inp.attention_mask,
                                    image_features=inp.image_features, budget=inp.budget,
                                    position_ids=inp.position_ids, units=units)
  out = shared(cache=shared.init_cache(3, inp.input_ids.shape[1] + 2), logits_to_keep=1, **call)
  kv = out.cache.kv
  # the cache keeps only the computed heads after the prefix, and the weights cut at prefill
  assert [t.shape[2] for t in kv.k] == [G] * PREFIX + [1] * (L - PREFIX)
  assert [s is None for s in kv.slices] == [True] * PREFIX + [False] * (L - PREFIX)
  assert kv.slices[PREFIX]["gate_proj"].kernel.shape == (H, INTER // G)
  tok = jnp.argmax(out.logits[:, -1], -1)[:, None]
  step = lambda cache: shared(input_ids=tok, attention_mask=jnp.ones_like(tok), cache=cache,
                              logits_to_keep=1, **dec).logits
  eqns = list(_eqns(jax.make_jaxpr(step)(out.cache).jaxpr))
  embed = shared.vlm.language_model.model.embed_tokens.embedding[...].shape
  smallest_kernel = H * D  # one unit's k_proj columns; a cache layer is larger still
  big = lambda e: [v.aval.shape for v in e.invars[:1]
                   if v.aval.size >= smallest_kernel and v.aval.shape != embed]
  # no weight slice gathered, no cache heads taken out, no full-head buffer scattered into
  assert [big(e) for e in eqns if e.primitive.name in ("gather", "scatter") and big(e)] == []
  writes = [e.invars[0].aval.shape[2] for e in eqns
            if e.primitive.name == "dynamic_update_slice" and e.invars[0].aval.ndim == 4]
  assert sorted(writes) == sorted([G] * 2 * PREFIX + [1] * 2 * (L - PREFIX))
  with jax.default_matmul_precision("highest"):  # and the step still equals the masked one
    ref = _step(shared, inp, None)[1]
    np.testing.assert_allclose(np.asarray(step(out.cache))[:, -1], ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("granularity", ["head", "layer"])
def test_compiled_generation_copies_no_cache_layer(shared, granularity):
  """Gated layers run under lax.cond; a cond that wrote a cache layer would copy the whole layer
  in XLA's program (every decode step). The compiled generation holds no such copy, with units
  gathered (head) or whole layers skipped (layer)."""
  from jaxvlm import frozen
  from jaxvlm.generation.autoregressive import _generate_jit
  if granularity == "layer":
    shared = ada.AdaLlava(models.from_config(_hf(), seed=0),
                          ada.AdaConfig(LAT, prefix_layers=PREFIX), nnx.Rngs(1))
  ids, mask, px = _prompts()
  inp = ada.budget_inputs(shared, ids, mask, px, latency_budget=0.45, token_budget=1.0)
  graphdef, state = frozen.split(shared)
  new = 4
  hlo = _generate_jit.lower(
      graphdef, state, jnp.asarray(inp.input_ids, jnp.int32),
      jnp.asarray(inp.attention_mask, jnp.int32), jax.random.key(0), inp.generate_kwargs(),
      max_new_tokens=new, temperature=0.0, top_k=0, top_p=1.0, eos=(), pad_token_id=0,
      return_cache=False, stop_check_every=1).compile().as_text()
  slots = inp.input_ids.shape[1] + new
  layers = {f"f32[3,{slots},{h},{D}]" for h in (inp.units, G)}
  copies = re.findall(r"= (\w+\[[\d,]*\])\S* copy\(", hlo)
  assert copies and not layers & set(copies)


# ----- FLOPs --------------------------------------------------------------------------------------
def test_layer_flops_per_unit_by_hand():
  cfg = LlamaConfig(vocab_size=10, hidden_size=4, intermediate_size=8, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=2)
  # whole: proj 2*4*(2*4*2 + 2*2*2) = 192, mlp 2*3*4*8 = 192, attention 2*2*4*2 = 32 per pair
  assert layer_flops(cfg, 3, 6) == 3 * 384 + 32 * 6
  # one unit: 2 q heads, 1 kv head, 4 MLP rows: proj 2*4*(2*2*2 + 2*1*2) = 96, mlp 96, attn 16
  assert layer_flops(cfg, 3, 6, units=1) == 3 * 192 + 16 * 6
  assert layer_flops(cfg, 3, 6, units=0) == 0
  f = flops_per_sample(cfg, 3, 0, 2, layer_units=[2, 1])
  head = 2 * 4 * 10
  assert f["prefill"] == (3 * 384 + 32 * 6) + (3 * 192 + 16 * 6) + head
  assert f["decode"] == [(384 + 32 * 4) + (192 + 16 * 4) + head]
  assert flops_per_sample(cfg, 3, 2, 2, layer_units=[2, 2]) == flops_per_sample(cfg, 3, 2, 2)


def test_flops_strictly_decrease_with_budget_on_the_tiny_config():
  from jaxvlm.config import load_config
  from jaxvlm.models.tiny import tiny_vlm_config, train_tokenizer
  c = load_config("configs/adallava.py:tiny")
  tok = train_tokenizer(c.model.family, ["what color is the square"])
  hf = tiny_vlm_config(c.model.family, tok, **c.model.hf_config.to_dict())
  cfg = LlamaConfig.from_hf(hf["text_config"])
  layers, groups, prefix = cfg.num_hidden_layers, cfg.num_key_value_heads, 1
  n_visual = 16
  totals, units = [], []
  for b in np.arange(1.0, 0.05, -0.1):
    n, g = (int(x) for x in ada.unit_counts(np.float32(b), layers, groups, prefix))
    plan = [groups] * prefix + [g] * n + [0] * (layers - prefix - n)
    units.append(sum(plan))
    k = int(ada.visual_keep_count(b, n_visual))
    totals.append(flops_per_sample(cfg, 12 + k + 1, 0, 6, layer_units=plan)["total"])
  assert all(a > b for a, b in zip(totals, totals[1:]))
  assert all(a >= b for a, b in zip(units, units[1:])) and units[0] == layers * groups


# ----- bad input ----------------------------------------------------------------------------------
def test_bad_granularity_and_shapes_name_the_field(shared):
  vlm = models.from_config(_hf(), seed=0)
  with pytest.raises(ConfigError, match=r"adallava.granularity: got 'heads'.*'layer', 'head'"):
    ada.AdaLlava(vlm, ada.AdaConfig(LAT, granularity="heads"), nnx.Rngs(0))
  odd = models.from_config(_hf(intermediate_size=90), seed=0)
  with pytest.raises(ConfigError, match=r"intermediate_size: got 90.*num_key_value_heads=4"):
    ada.AdaLlava(odd, ada.AdaConfig(LAT, granularity="head"), nnx.Rngs(0))
  ada.AdaLlava(odd, ada.AdaConfig(LAT), nnx.Rngs(0))  # layer granularity does not split rows
  masked = _ada(False)
  ids, mask, px = _prompts(1)
  inp = ada.budget_inputs(masked, ids, mask, px, latency_budget=0.7, token_budget=0.7)
  assert inp.units == 0 and "units" not in inp.generate_kwargs()  # nothing gathered
  with pytest.raises(ConfigError, match=r"units: got 3.*shared_plan"):
    _step(masked, inp, ada.UnitCount(3))
