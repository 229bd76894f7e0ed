"""ICD method parts: losses vs hand-computed values, samplers and selections reproducible, policy
log-probabilities consistent, InfoScore beams exact on a known scorer, embeddings cache, one
GRPO step sharded = single device, bad input."""

from __future__ import annotations

import itertools
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvlm.data.vqa import read_vqa
from jaxvlm.errors import ConfigError, JaxVLMError
from jaxvlm.methods import icd
from jaxvlm.methods.icd import train as icd_train
from jaxvlm.sharding import make_mesh

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "vqa")


def test_grpo_loss_matches_hand_computation(rng):
  n, g = 12, 4
  logp, old, ref = (rng.normal(-2, 0.4, n).astype(np.float32) for _ in range(3))
  rewards = rng.integers(0, 3, n).astype(np.float32)
  rewards[4:8] = 1.0  # a constant group: zero advantage
  rewards[8] = 40.0   # one outlier: clipped advantage in its group
  loss, m = icd.grpo_loss(jnp.asarray(logp), jnp.asarray(old), jnp.asarray(ref),
                          jnp.asarray(rewards), group_size=g, clip=0.2, kl_beta=0.15, adv_clip=1.5)
  r = rewards.astype(np.float64).reshape(-1, g)
  adv = np.clip((r - r.mean(1, keepdims=True)) / (r.std(1, keepdims=True) + 1e-8), -1.5, 1.5)
  adv = adv.reshape(-1)
  ratio = np.exp(logp - old)
  surr = np.minimum(ratio * adv, np.clip(ratio, 0.8, 1.2) * adv)
  d = logp.astype(np.float64) - ref  # Lever-Plus: r = pi / pi_ref, KL = r - 1 - log r
  kl = np.mean(np.exp(d) - 1 - d)
  np.testing.assert_allclose(float(loss), -surr.mean() + 0.15 * kl, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(m["kl"]), kl, rtol=1e-5)
  assert np.abs(adv).max() == pytest.approx(1.5)


def test_grpo_gradient_and_bad_kl_beta():
  grad = jax.grad(lambda lp: icd.grpo_loss(lp, jnp.zeros(2), jnp.zeros(2), jnp.array([0., 1.]),
                                           group_size=2, kl_beta=0.0)[0])(jnp.zeros(2))
  np.testing.assert_allclose(grad, [0.5, -0.5], atol=1e-6)  # -d mean(ratio*A)/dlogp = -A/2
  with pytest.raises(ConfigError, match="kl_beta.*-0.1"):
    icd.grpo_loss(jnp.zeros(2), jnp.zeros(2), jnp.zeros(2), jnp.zeros(2), group_size=2,
                  kl_beta=-0.1)
  with pytest.raises(ConfigError, match="group_size"):
    icd.grpo_loss(jnp.zeros(6), jnp.zeros(6), jnp.zeros(6), jnp.zeros(6), group_size=4)


def test_rce_loss_and_tau_schedule(rng):
  logp, rewards = rng.normal(-3, 1, (5, 4)), rng.normal(0, 1, (5, 4))
  tau = 0.7
  w = np.exp(rewards / tau) / np.exp(rewards / tau).sum(1, keepdims=True)
  loss, _ = icd.rce_loss(jnp.asarray(logp), jnp.asarray(rewards), tau)
  np.testing.assert_allclose(float(loss), -(w * logp).sum(1).mean(), rtol=1e-5)
  assert float(icd.rce_tau(0, 11)) == pytest.approx(2.0)
  assert float(icd.rce_tau(5, 11)) == pytest.approx(1.25)
  assert float(icd.rce_tau(10, 11)) == pytest.approx(0.5)


def test_samplers_reproducible_and_exclude_self(rng):
  pool = rng.normal(size=(40, 8))
  s1, s2 = icd.RandSampler(40, 6, seed=3), icd.RandSampler(40, 6, seed=3)
  ids = np.array([5, 17, 2, 33])
  a = s1(ids, exclude=ids)
  np.testing.assert_array_equal(a, s2(ids[::-1], exclude=ids[::-1])[::-1])  # per-query stable
  assert all(len(set(r)) == 6 and q not in r for q, r in zip(ids, a))
  assert not np.array_equal(a, icd.RandSampler(40, 6, seed=4)(ids, exclude=ids))
  q = pool[ids] + 0.01 * rng.normal(size=(4, 8))
  sim = icd.SimilaritySampler(pool, 5)(ids, exclude=ids, query_emb=q)
  cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (
      pool / np.linalg.norm(pool, axis=1, keepdims=True)).T
  cos[np.arange(4), ids] = -np.inf
  np.testing.assert_array_equal(sim, np.argsort(-cos, axis=1)[:, :5])
  mixed = icd.MixedSampler(pool, 6, seed=3, similar_share=0.5)(ids, exclude=ids, query_emb=q)
  np.testing.assert_array_equal(mixed[:, :3], sim[:, :3])
  assert all(len(set(r)) == 6 for r in mixed)
  with pytest.raises(ConfigError, match="num_candidates"):
    icd.RandSampler(10, 10)


@pytest.mark.parametrize("name,kwargs", [("pointer", {}), ("pointer", {"static_query": False}),
                                         ("lever_lm", {})],
                         ids=["pointer-static", "pointer-update", "lever_lm"])
def test_policy_logp_consistent_and_same_seed_same_indices(name, kwargs, rng):
  f, b, k, s = 12, 3, 7, 4
  query, cands = jnp.asarray(rng.normal(size=(b, f))), jnp.asarray(rng.normal(size=(b, k, f)))
  pol = icd.make_policy(name, f, seed=1, dim=32, **kwargs)
  greedy = icd.decode(pol, query, cands, s)
  again = icd.decode(icd.make_policy(name, f, seed=1, dim=32, **kwargs), query, cands, s)
  np.testing.assert_array_equal(greedy, again)
  assert all(len(set(r)) == s for r in np.asarray(greedy).tolist())  # picked ones are masked
  key = jax.random.key(5)
  sampled = icd.decode(pol, query, cands, s, key)
  np.testing.assert_array_equal(sampled, icd.decode(pol, query, cands, s, key))
  # teacher-forced log-probs equal the step-by-step distribution of decoding
  logp = np.asarray(icd.sequence_logp(pol, query, cands, sampled))
  for t in range(s):
    prefix = jnp.zeros_like(sampled).at[:, :t].set(sampled[:, :t])
    step = jax.nn.log_softmax(pol.logits(query, cands, prefix)[:, t])
    np.testing.assert_allclose(logp[:, t], np.asarray(step)[np.arange(b), sampled[:, t]],
                               rtol=1e-5, atol=1e-5)
  for bad in (0, k + 1):
    with pytest.raises(ConfigError, match="shots"):
      icd.decode(pol, query, cands, bad)


def test_beam_search_exact_on_known_scorer_and_cached(tmp_path, rng):
  """P(y | x, S) = sigmoid(sum of per-(query, item) values): the best sequence is known."""
  value = rng.normal(size=(3, 20))
  calls = []

  def prob_fn(rows, shots):
    calls.append(len(rows))
    return 1 / (1 + np.exp(-value[rows[:, None], shots].sum(1) if shots.shape[1] else
                           np.zeros(len(rows))))

  cands = np.stack([rng.permutation(20)[:5] for _ in range(3)])
  out = icd.cached_beam_search(str(tmp_path / "b.jsonl"), prob_fn, [10, 11, 12], [0, 1, 2],
                               cands, 2, beam_size=20, progress=False)
  for q, rec in enumerate(out):
    best = max(itertools.permutations(range(5), 2),
               key=lambda p: value[q, cands[q, list(p)]].sum())
    assert set(rec["beams"][0]) == set(best)
    assert rec["icd_indices"][0] == cands[q, rec["beams"][0]].tolist()
    assert sum(rec["infoscores"][0]) == pytest.approx(rec["scores"][0])
  n_calls = len(calls)
  again = icd.cached_beam_search(str(tmp_path / "b.jsonl"), prob_fn, [10, 11, 12], [0, 1, 2],
                                 cands, 2, beam_size=20, progress=False)
  assert len(calls) == n_calls and again == out
  # a kill during the append leaves a torn last line: it is dropped and that query recomputed
  path = tmp_path / "b.jsonl"
  lines = path.read_text().splitlines(keepends=True)
  path.write_text("".join(lines[:2]) + lines[2][:len(lines[2]) // 2])
  calls.clear()
  recovered = icd.cached_beam_search(str(path), prob_fn, [10, 11, 12], [0, 1, 2], cands, 2,
                                     beam_size=20, progress=False)
  assert recovered == out and calls and len(path.read_text().splitlines()) == 3


def test_fusion_and_embedding_cache(tmp_path, rng):
  img, txt = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
  cat = icd.fuse(img, txt, "concat")
  assert cat.shape == (4, 12) and np.allclose(np.linalg.norm(cat[:, :6], axis=1), 1)
  np.testing.assert_allclose(icd.fuse(img, txt, "text"), txt / np.linalg.norm(txt, axis=1)[:, None])
  s = icd.fuse(img, txt, "sum")
  np.testing.assert_allclose(np.linalg.norm(s, axis=1), 1, rtol=1e-6)
  with pytest.raises(ConfigError, match="fusion"):
    icd.fuse(img, txt, "max")
  calls = []
  compute = lambda: calls.append(1) or cat
  a = icd.cached_embeddings(str(tmp_path), "pool", [1, 2, 3, 4], {"fusion": "concat"}, compute)
  b = icd.cached_embeddings(str(tmp_path), "pool", [1, 2, 3, 4], {"fusion": "concat"}, compute)
  np.testing.assert_array_equal(a, b)
  assert len(calls) == 1 and os.path.exists(tmp_path / "pool.json")
  icd.cached_embeddings(str(tmp_path), "pool", [1, 2, 3, 4], {"fusion": "sum"}, compute)
  assert len(calls) == 2


def _grpo_trainer(mesh, tmp):
  pol = icd.make_policy("pointer", 8, seed=0, dim=16)
  loss_fn = icd_train.make_grpo_loss_fn(4)
  # eps >> |grad|: the first Adam update is linear in the gradient (no sign of ~0 noise)
  return icd_train.Trainer(pol, {"lr": 1.0, "schedule": "constant", "eps": 1.0}, loss_fn,
                           lambda s, t: iter(()), mesh,
                           config=icd_train.TrainConfig(steps=1, progress=False))


def test_one_grpo_step_on_8_devices_equals_one(rng):
  n, k, s = 16, 6, 3
  batch = {"query": rng.normal(size=(n, 8)).astype(np.float32),
           "cands": rng.normal(size=(n, k, 8)).astype(np.float32),
           "actions": np.stack([rng.permutation(k)[:s] for _ in range(n)]).astype(np.int32),
           "old_logp": rng.normal(-4, 0.3, n).astype(np.float32),
           "ref_logp": rng.normal(-4, 0.3, n).astype(np.float32),
           "rewards": rng.integers(0, 3, n).astype(np.float32),
           "kl_beta": np.full(n, 0.12, np.float32)}
  one = _grpo_trainer(None, None)
  m1 = one.train_step(batch)
  eight = _grpo_trainer(make_mesh({"data": 8, "fsdp": 1, "tensor": 1}), None)
  m8 = eight.train_step(batch)
  np.testing.assert_allclose(float(m8["loss"]), float(m1["loss"]), rtol=1e-5)
  np.testing.assert_allclose(float(m8["kl"]), float(m1["kl"]), rtol=1e-5)
  # the key bias has an identically zero gradient (softmax shift invariance): only noise moves it
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(eight.params),
                          jax.tree.leaves(one.params)):
    if "attn_k" not in str(path) or "kernel" in str(path):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4,
                                 err_msg=jax.tree_util.keystr(path))


def test_reader_errors_name_the_file(tmp_path):
  q = os.path.join(FIX, "v2_OpenEnded_mscoco_val2014_questions.json")
  a = os.path.join(FIX, "v2_mscoco_val2014_annotations.json")
  bad = json.load(open(a))
  bad["annotations"][0]["question_id"] = 999999999
  bad_path = tmp_path / "annotations.json"
  bad_path.write_text(json.dumps(bad))
  with pytest.raises(JaxVLMError, match=r"annotations\.json.*question ids"):
    read_vqa(q, str(bad_path), os.path.join(FIX, "images"))
  images = tmp_path / "images"
  shutil.copytree(os.path.join(FIX, "images"), images)
  for f in os.listdir(images):
    if "val2014" in f:
      os.remove(images / f)
      break
  with pytest.raises(JaxVLMError, match="COCO_val2014_"):
    read_vqa(q, a, str(images))
