"""KAVA core: loss terms by hand, R-KV selection vs NumPy, Jacobi vs sequential references,
gradients through every iteration, and the bad-input errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxvlm import models
from jaxvlm.data.tokenizer import CharTokenizer
from jaxvlm.errors import ConfigError
from jaxvlm.layers import lora
from jaxvlm.methods import kava
from jaxvlm.methods.kava import losses, passes
from jaxvlm.layers.rope import apply_rope
from jaxvlm.methods.kava.method import compressed_teacher_kv, packed_ce

# compile-bound (tiny shapes, eager ops): XLA's cheap compile mode (conftest)
pytestmark = pytest.mark.usefixtures("fast_compile")

TINY = dict(model_type="llama", vocab_size=100, hidden_size=32, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=128, tie_word_embeddings=False)


# ----- loss terms against hand-computed values -----------------------------------------------
def test_distances_and_ce_by_hand():
  x = jnp.array([0.5, -2.0, 1.0])
  np.testing.assert_allclose(losses.distance(x, "smooth_l1"), [0.125, 1.5, 0.5])
  np.testing.assert_allclose(losses.distance(x, "l1"), [0.5, 2.0, 1.0])
  np.testing.assert_allclose(losses.distance(x, "mse"), [0.25, 4.0, 1.0])
  logits = jnp.log(jnp.array([[[1.0, 1.0], [3.0, 1.0]]]))
  ce, acc = losses.masked_ce(logits, jnp.array([[0, 1]]), jnp.array([[1, 1]]))
  np.testing.assert_allclose(ce, (math.log(2) + math.log(4)) / 2, rtol=1e-6)
  np.testing.assert_allclose(losses.masked_ce(logits, jnp.array([[0, 1]]),
                                              jnp.array([[0, 1]]))[0], math.log(4), rtol=1e-6)
  assert float(acc) == 0.5  # argmax [1, 1] -> 0 (hit), argmax [3, 1] -> 0 (target 1: miss)
  # packed CE: a target after interior padding is predicted from the last valid token.
  lg = jnp.log(jnp.array([[[1.0, 3.0], [9.0, 1.0], [1.0, 1.0]]]))
  args = jnp.array([[0, 0, 1]]), jnp.array([[1, 0, 1]]), jnp.array([[0, 0, 1]])
  for start in (0, 2):  # the window holds the target; its source (column 0) lies before it
    ce, _ = packed_ce(lambda h: h, lg, *args, start=start)
    np.testing.assert_allclose(ce, -math.log(3 / 4), rtol=1e-6)


def test_codi_and_kv_losses_by_hand():
  teacher = [jnp.array([[1.0, 3.0]]), jnp.array([[0.0, 4.0]])]   # per-layer std 1 and 2
  student = [jnp.array([[1.0, 1.0]]), jnp.array([[0.0, 3.0]])]
  # layer 1: diff (0, 2)/1 -> smooth-L1 (0, 1.5); layer 2: (0, 1)/2 -> (0, 0.125)
  np.testing.assert_allclose(losses.codi_loss(teacher, student, "smooth_l1", "diff"),
                             (0.75 + 0.0625) / 2, rtol=1e-5)
  np.testing.assert_allclose(losses.codi_loss(teacher, student, "l1", "none"), (1.0 + 0.5) / 2)
  tk, tv = [jnp.array([2.0, 0.0]).reshape(1, 1, 1, 2)], [jnp.ones((1, 1, 1, 2))]
  sk, sv = [jnp.zeros((1, 1, 1, 2))], [jnp.array([0.0, 3.0]).reshape(1, 1, 1, 2)]
  np.testing.assert_allclose(losses.kv_loss(tk, tv, sk, sv, "l1", False), (1.0 + 1.5) / 2)
  np.testing.assert_allclose(losses.kv_loss(tk, tv, sk, sv, "mse", False), (2.0 + 2.5) / 2)
  # std-normalised: K target std 1 -> diffs (2, 0); V target std 0 -> diff / 1e-6 (huge)
  np.testing.assert_allclose(losses.kv_loss(tk, tk, sk, sk, "l1", True), 1.0, rtol=1e-5)
  # teacher targets carry no gradient
  g = jax.grad(lambda t: losses.layer_distance(t, sk[0], "smooth_l1", "loss"))(tk[0])
  assert not np.any(np.asarray(g))


# ----- select_kv_indices against a NumPy reference --------------------------------------------
def select_ref(att, keys, m, lam, variant="rkv", cot_valid=None, ans_valid=None):
  h, a, c = att.shape
  cv = np.ones(c, bool) if cot_valid is None else cot_valid
  av = np.ones(a, bool) if ans_valid is None else ans_valid
  out = []
  for hh in range(h):
    imp = att[hh][av].mean(0) if av.any() else np.zeros(c)
    k = keys[hh] / np.linalg.norm(keys[hh], axis=-1, keepdims=True)
    cos = k @ k.T
    valid = np.flatnonzero(cv)
    mean_cos = np.array([np.mean([cos[i, j] for j in valid if j != i]) if len(valid) > 1 else 0.0
                         for i in range(c)])
    e = np.exp(-mean_cos[valid] - np.max(-mean_cos[valid]))
    red = np.zeros(c)
    red[valid] = e / e.sum()
    score = {"rkv": lam * imp + (1 - lam) * red, "attention_only": imp, "cosine_only": red,
             "right_crop": np.arange(c, dtype=float)}[variant]
    ranked = sorted(valid, key=lambda i: (-score[i], i))[:m]
    kept = sorted(ranked)
    kept += [kept[-1]] * (m - len(kept))
    out.append(kept)
  return np.array(out)


@pytest.mark.parametrize("variant", ["rkv", "attention_only", "cosine_only", "right_crop"])
def test_select_kv_indices_matches_numpy(rng, variant):
  for h, a, c, m in ((2, 3, 10, 4), (1, 5, 7, 7), (3, 2, 16, 5)):
    att = rng.dirichlet(np.ones(c), (h, a)).astype(np.float32)
    keys = rng.normal(size=(h, c, 8)).astype(np.float32)
    got = kava.select_kv_indices(jnp.asarray(att), jnp.asarray(keys), m, 0.3, variant=variant)
    assert got.dtype == jnp.int32 and got.shape == (h, m)
    np.testing.assert_array_equal(got, select_ref(att, keys, m, 0.3, variant))
  # with padding masks
  cv, av = np.arange(12) < 9, np.arange(4) < 3
  att = rng.dirichlet(np.ones(12), (2, 4)).astype(np.float32)
  keys = rng.normal(size=(2, 12, 8)).astype(np.float32)
  got = kava.select_kv_indices(jnp.asarray(att), jnp.asarray(keys), 5, variant=variant,
                               cot_valid=jnp.asarray(cv), answer_valid=jnp.asarray(av))
  np.testing.assert_array_equal(got, select_ref(att, keys, 5, 0.1, variant, cv, av))


def test_select_kv_indices_ties_and_short_cot():
  # identical keys and uniform attention: every score ties -> the lowest indices win
  att, keys = jnp.full((2, 3, 6), 1 / 6), jnp.ones((2, 6, 4))
  np.testing.assert_array_equal(kava.select_kv_indices(att, keys, 3), [[0, 1, 2]] * 2)
  # two tied maxima (entries 1 and 4) for one slot: the lower index is kept
  a = np.full((1, 1, 5), 0.1, np.float32)
  a[0, 0, [1, 4]] = 0.3
  np.testing.assert_array_equal(
      kava.select_kv_indices(jnp.asarray(a), jnp.ones((1, 5, 2)), 1, variant="attention_only"),
      [[1]])
  # C < M: every entry kept, padded by repeating the last one
  got = kava.select_kv_indices(jnp.full((1, 2, 3), 1 / 3), jnp.eye(3)[None], 5)
  np.testing.assert_array_equal(got, [[0, 1, 2, 2, 2]])
  cv = jnp.array([True, True, False, False])
  got = kava.select_kv_indices(jnp.full((1, 1, 4), 0.25), jnp.eye(4)[None], 3, cot_valid=cv)
  np.testing.assert_array_equal(got, [[0, 1, 1]])


def test_pool_group_mean_and_max(rng):
  probs = rng.random((2, 4, 3, 5)).astype(np.float32)
  np.testing.assert_allclose(kava.pool_group(jnp.asarray(probs), 2),
                             probs.reshape(2, 2, 2, 3, 5).mean(2), rtol=1e-6)
  np.testing.assert_allclose(kava.pool_group(jnp.asarray(probs), 2, "max"),
                             probs.reshape(2, 2, 2, 3, 5).max(2))


# ----- teacher / student passes ------------------------------------------------------------------
def tiny_kava(projection="mlp", lora_rank=0, seed=0):
  lm = models.from_config(TINY, seed=seed)
  if lora_rank:
    lora.apply_lora(lm, rank=lora_rank, alpha=8.0, dropout=0.0, seed=seed)
    for m in lora.lora_modules(lm).values():  # non-zero B so that A gets gradients too
      m.lora_b[...] = 0.1 * jax.random.normal(jax.random.key(seed), m.lora_b[...].shape)
  return kava.KavaModel(lm, projection, bot_id=90, eot_id=91, latent_id=92, seed=seed)


def random_batch(rng, b=3, lq=6, lc=7, la=5):
  q_mask = (np.arange(lq)[None] >= rng.integers(0, 3, (b, 1))).astype(np.int32)  # left pad
  cot_mask = (np.arange(lc)[None] < rng.integers(3, lc + 1, (b, 1))).astype(np.int32)
  ans_mask = (np.arange(la)[None] < rng.integers(3, la + 1, (b, 1))).astype(np.int32)
  ids = lambda shape, mask: np.where(mask, rng.integers(3, 80, shape), 0).astype(np.int32)
  ans_loss = ans_mask.copy()
  ans_loss[:, :2] = 0  # a 2-token answer prefix
  return {"q_ids": ids((b, lq), q_mask), "q_mask": q_mask, "cot_ids": ids((b, lc), cot_mask),
          "cot_mask": cot_mask, "ans_ids": ids((b, la), ans_mask), "ans_mask": ans_mask,
          "ans_loss": ans_loss}


def _full(model, embeds, mask):
  """One uncached full-sequence pass (the sequential reference)."""
  return model.lm(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True)


def reference_student(model, batch, m, iterations, sequential=False):
  """Answer logits by uncached full-sequence passes: PCCoT Jacobi (or sequential latents)."""
  q, qm = jnp.asarray(batch["q_ids"]), jnp.asarray(batch["q_mask"])
  b, lq = q.shape
  e = model.embed
  ones = lambda n: jnp.ones((b, n), jnp.int32)
  head = jnp.concatenate([e(q), jnp.broadcast_to(e(jnp.array([model.bot_id])), (b, 1, 32))], 1)
  head_mask = jnp.concatenate([qm, ones(1)], 1)
  if sequential:
    z = jnp.zeros((b, 0, 32))
    for _ in range(m):
      h = _full(model, jnp.concatenate([head, z], 1), jnp.concatenate([head_mask, ones(
          z.shape[1])], 1)).last_hidden_state
      z = jnp.concatenate([z, model.prj(h[:, -1:])], 1)
  else:
    lat = jnp.broadcast_to(e(jnp.array([model.latent_id])), (b, m, 32))
    h = _full(model, jnp.concatenate([head, lat], 1), jnp.concatenate([head_mask, ones(m)], 1))
    z = model.prj(h.last_hidden_state[:, lq:lq + m])
    for _ in range(iterations - 1):
      h = _full(model, jnp.concatenate([head, z], 1), jnp.concatenate([head_mask, ones(m)], 1))
      z = jnp.concatenate([z[:, :1], model.prj(h.last_hidden_state[:, lq + 1:])[:, :-1]], 1)
  tail = e(jnp.concatenate([jnp.full((b, 1), model.eot_id), jnp.asarray(batch["ans_ids"])], 1))
  out = _full(model, jnp.concatenate([head, z, tail], 1),
              jnp.concatenate([head_mask, ones(m + 1), jnp.asarray(batch["ans_mask"])], 1))
  return out.logits[:, lq + 1 + m:], out


def _jit(model, fn):
  """``fn(model)`` as one compiled program (the model's state an argument) instead of op-by-op
  dispatch: the passes below are unrolled loops of many small ops."""
  graphdef, state = nnx.split(model)
  return jax.jit(lambda st: fn(nnx.merge(graphdef, st)))(state)


def _valid_close(ours, ref, batch):
  mask = np.concatenate([np.ones((ours.shape[0], 1)), batch["ans_mask"]], 1).astype(bool)
  np.testing.assert_allclose(np.asarray(ours)[mask], np.asarray(ref)[mask], rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("iterations", [1, 2])
def test_jacobi_equals_uncached_reference(rng, iterations):
  model, batch = tiny_kava(), random_batch(rng)
  with jax.default_matmul_precision("highest"):
    s, ref = _jit(model, lambda m: (kava.student_forward(m, batch, 4, iterations).logits,
                                    reference_student(m, batch, 4, iterations)[0]))
  _valid_close(s, ref, batch)


def test_jacobi_with_t_equal_m_is_sequential_latent_decoding(rng):
  model, batch = tiny_kava(), random_batch(rng)
  with jax.default_matmul_precision("highest"):
    s, seq, fewer = _jit(model, lambda m: (
        kava.student_forward(m, batch, 3, 3).logits,
        reference_student(m, batch, 3, 0, sequential=True)[0],
        kava.student_forward(m, batch, 3, 2).logits))
  _valid_close(s, seq, batch)
  assert np.max(np.abs(np.asarray(fewer) - np.asarray(seq))) > 1e-4  # T < M differs


def test_teacher_kv_is_the_post_rope_cache_and_attention_is_exact(rng):
  model, batch = tiny_kava(), random_batch(rng)
  lq, lc = 6, 7
  with jax.default_matmul_precision("highest"):
    t = kava.teacher_forward(model, batch, need_cache=True, need_attention=True,
                             attention_over="sequence")
    ids = np.concatenate([batch["q_ids"], batch["cot_ids"], batch["ans_ids"]], 1)
    mask = np.concatenate([batch["q_mask"], batch["cot_mask"], batch["ans_mask"]], 1)
    full = model.lm(ids, attention_mask=mask, output_attentions=True)
  np.testing.assert_allclose(t.logits, full.logits, rtol=1e-5, atol=1e-5)
  # the teacher CE on the LM head of the CoT + answer window = the CE on the full logits
  target = np.concatenate([0 * batch["q_mask"], batch["cot_mask"], batch["ans_mask"]], 1)
  with jax.default_matmul_precision("highest"):
    window = packed_ce(model.lm.logits, t.last_hidden, ids, mask, target, start=lq)
  everywhere = packed_ce(lambda h: h, full.logits, ids, mask, target)
  np.testing.assert_allclose(window, everywhere, rtol=1e-5)
  for layer in range(2):
    want = kava.pool_group(full.attentions[layer][:, :, lq + lc:, lq:lq + lc], 2)
    np.testing.assert_allclose(t.answer_attention[layer], want, atol=1e-5)
  assert t.k[0].shape == (3, 18, 2, 8)


def test_kv_rope_student_moves_key_targets_to_the_latent_slots(rng):
  """kv_rope="student": kept CoT entry i_j (teacher position n_q + i_j) becomes the key of the
  same content at latent j's position n_q + 1 + j; "teacher" keeps the cached key; V is as cached."""
  model, batch = tiny_kava(), random_batch(rng)
  lq, m = 6, 4
  with jax.default_matmul_precision("highest"):
    t = kava.teacher_forward(model, batch, need_cache=True)
    cfg = lambda rope: kava.KavaConfig(num_latents=m, select="right_crop", kv_rope=rope)
    moved_k, moved_v = compressed_teacher_kv(cfg("student"), t, batch, model)
    cached_k, cached_v = compressed_teacher_kv(cfg("teacher"), t, batch, model)
    n_q = batch["q_mask"].sum(1)
    n_c = batch["cot_mask"].sum(1)
    for layer, blk in enumerate(model.lm.model.layers):
      raw = blk.self_attn.k_proj(blk.input_layernorm(t.hidden[layer]))  # pre-RoPE keys
      raw = raw.reshape(*raw.shape[:2], 2, 8)
      for b in range(3):
        # right-crop: the last M valid entries (a shorter CoT repeats its last one)
        idx = np.array(list(range(max(n_c[b] - m, 0), n_c[b])) + [n_c[b] - 1] * max(m - n_c[b], 0))
        at = lambda p: model.lm.model.rope_tables(jnp.asarray(p)[None])
        want_s = apply_rope(raw[b:b + 1, lq + idx], *at(n_q[b] + 1 + np.arange(m)))
        want_t = apply_rope(raw[b:b + 1, lq + idx], *at(n_q[b] + idx))
        np.testing.assert_allclose(moved_k[layer][b], want_s[0], atol=2e-5)
        np.testing.assert_allclose(cached_k[layer][b], want_t[0], atol=2e-5)
        np.testing.assert_allclose(moved_v[layer][b], cached_v[layer][b])
  with pytest.raises(ConfigError, match="kava.kv_rope"):
    kava.KavaConfig(kv_rope="none")


def test_lora_gradients_flow_through_every_iteration(rng):
  model, batch = tiny_kava(lora_rank=4), random_batch(rng)
  cfg = kava.KavaConfig(num_latents=3, iterations=3, kv_iterations="all")
  loss_fn = kava.make_loss_fn(cfg, prefix_len=2)
  graphdef, params, rest = nnx.split(model, nnx.Any(nnx.LoRAParam, kava.LatentParam), ...)

  @jax.jit  # one compile instead of op-by-op dispatch of four passes
  def student_ce(p):
    with jax.default_matmul_precision("highest"):
      return loss_fn(nnx.merge(graphdef, p, rest), batch, None)[1]["student_ce"]

  grads = jax.jit(jax.grad(student_ce))(params)
  leaves = jax.tree.leaves(grads)
  assert all(np.all(np.isfinite(g)) for g in leaves)
  lora_grads = jax.tree.leaves(nnx.state(nnx.merge(graphdef, grads, rest), nnx.LoRAParam))
  assert len(lora_grads) == 16 and all(np.any(np.asarray(g) != 0) for g in lora_grads)
  # no stop-gradient anywhere: the gradient equals a central finite difference along a random
  # direction (a cut between iterations would drop their contribution)
  direction = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), params)
  eps = 1e-3
  shift = lambda s: jax.tree.map(lambda p, d: p + s * d, params, direction)
  fd = (student_ce(shift(eps)) - student_ce(shift(-eps))) / (2 * eps)
  analytic = sum(jnp.vdot(g, d) for g, d in zip(leaves, jax.tree.leaves(direction)))
  np.testing.assert_allclose(fd, analytic, rtol=2e-2)
  # and the full loss (every term on) has finite gradients for all of them
  full = jax.jit(jax.grad(lambda p: loss_fn(nnx.merge(graphdef, p, rest), batch, None)[0]))(
      params)
  assert all(np.all(np.isfinite(g)) and np.any(g != 0) for g in jax.tree.leaves(full))


def test_loss_terms_switch_and_weight(rng):
  model, batch = tiny_kava(), random_batch(rng)
  base = dict(num_latents=3, iterations=2)
  w = (("student_ce", 2.0), ("teacher_ce", 0.5), ("codi", 3.0), ("kv", 4.0))
  cfgs = [kava.KavaConfig(**base), kava.KavaConfig(**base, weights=w),
          kava.KavaConfig(**base, terms=("student_ce", "kv")),
          kava.KavaConfig(**base, select="right_crop"), kava.KavaConfig(method="cot"),
          kava.KavaConfig(method="nocot")]
  # the six losses in one compiled program instead of op-by-op dispatch of six loss passes
  out = _jit(model, lambda m: [kava.kava_loss(c, m, batch, 2) for c in cfgs])
  (loss, aux), (loss2, _), (only, aux3), (crop, aux4) = out[:4]
  assert set(aux) == {"student_ce", "teacher_ce", "codi", "kv", "answer_accuracy"}
  np.testing.assert_allclose(loss, aux["student_ce"] + aux["teacher_ce"] + 10 * aux["codi"]
                             + aux["kv"], rtol=1e-5)
  np.testing.assert_allclose(loss2, 2 * aux["student_ce"] + 0.5 * aux["teacher_ce"]
                             + 3 * aux["codi"] + 4 * aux["kv"], rtol=1e-5)
  assert set(aux3) == {"student_ce", "kv", "answer_accuracy"}
  np.testing.assert_allclose(aux3["kv"], aux["kv"], rtol=1e-5)
  assert np.isfinite(float(crop)) and float(aux4["kv"]) != float(aux["kv"])
  for l, a in out[4:]:  # method cot, nocot
    assert np.isfinite(float(l)) and len(a) == 2


def test_codi_offset_moves_the_compared_position(rng):
  model, batch = tiny_kava(), random_batch(rng)
  lq, lc, la = (batch[f"{k}_ids"].shape[1] for k in ("q", "cot", "ans"))
  offsets = (0, 1, la - 2)
  cfg = lambda offset: kava.KavaConfig(num_latents=3, iterations=2, terms=("student_ce", "codi"),
                                       codi_offset=offset)
  t_hidden, s_hidden, auxes = _jit(model, lambda m: (
      passes.teacher_forward(m, batch, need_cache=True).hidden,
      passes.student_forward(m, batch, 3, 2).hidden,
      [kava.kava_loss(cfg(offset), m, batch, 2)[1] for offset in offsets]))
  for offset, aux in zip(offsets, auxes):
    d_t, d_s = lq + lc + 1 + offset, 2 + offset  # the last prefix token, moved by the offset
    # both positions hold the same answer token (layer 0 = its embedding) ...
    np.testing.assert_array_equal(t_hidden[0][:, d_t], s_hidden[0][:, d_s])
    # ... and the term compares the layers' states there
    want = losses.codi_loss([h[:, d_t] for h in t_hidden], [h[:, d_s] for h in s_hidden])
    np.testing.assert_allclose(aux["codi"], want, rtol=1e-5)
  with pytest.raises(ConfigError, match="kava.codi_offset"):  # refused while tracing
    _jit(model, lambda m: kava.kava_loss(kava.KavaConfig(num_latents=3, iterations=2,
                                                         codi_offset=la - 1), m, batch, 2))
  with pytest.raises(ConfigError, match="kava.codi_offset"):
    kava.KavaConfig(codi_offset=-1)


def test_latent_inference_counts_forward_passes(rng):
  model, tok = tiny_kava(), CharTokenizer()
  q = np.array([[0, 5, 6], [4, 5, 6]], np.int32)
  qm = (q > 0).astype(np.int32)
  toks, num = kava.latent_generate(model, q, qm, [7, 8], num_latents=3, iterations=2,
                                   max_new_tokens=4, eos_token_id=tok.eos_token_id)
  assert toks.shape == (2, 4) and np.all((np.asarray(num) >= 1) & (np.asarray(num) <= 4))
  # every answer token equals the argmax of the training-time student pass teacher-forced on the
  # prefix and the tokens generated before it (positions of the decode steps included)
  toks, num = np.asarray(toks), np.asarray(num)
  ans = np.concatenate([np.array([[7, 8]] * 2), toks], 1).astype(np.int32)
  batch = {"q_ids": q, "q_mask": qm, "ans_ids": ans, "ans_mask": np.ones_like(ans)}
  with jax.default_matmul_precision("highest"):
    logits = _jit(model, lambda m: kava.student_forward(m, batch, 3, 2).logits)
  for r in range(2):
    np.testing.assert_array_equal(toks[r, :num[r]], np.argmax(logits[r, 2:2 + num[r]], -1))


# ----- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, field", [
    (dict(num_latents=0), "kava.num_latents"), (dict(iterations=0), "kava.iterations"),
    (dict(method="coconut"), "kava.method"), (dict(terms=("student_ce", "kl")), "kava.terms"),
    (dict(weights=(("ce", 1.0),)), "kava.terms"), (dict(kv_distance="huber"), "kava.kv_distance"),
    (dict(select="h2o"), "kava.select"), (dict(pooling="sum"), "kava.pooling"),
    (dict(kv_iterations="first"), "kava.kv_iterations"),
    (dict(method="cot", terms=("kv",)), "kava.terms")])
def test_bad_settings_name_the_field(kwargs, field):
  with pytest.raises(ConfigError, match=field):
    kava.KavaConfig(**kwargs)


def test_bad_selection_inputs():
  with pytest.raises(ConfigError, match="num_keep"):
    kava.select_kv_indices(jnp.ones((1, 2, 3)), jnp.ones((1, 3, 4)), 0)
  with pytest.raises(ValueError, match="keys"):
    kava.select_kv_indices(jnp.ones((1, 2, 3)), jnp.ones((1, 4, 4)), 2)
  with pytest.raises(ConfigError, match="kava.select"):
    kava.select_kv_indices(jnp.ones((1, 2, 3)), jnp.ones((1, 3, 4)), 2, variant="snapkv")
