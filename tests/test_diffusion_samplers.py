"""LLaDA and Dream samplers: schedules, NumPy reference equality, fills, prompt invariance."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvlm.errors import ConfigError
from jaxvlm.generation import diffusion

VOCAB, MASK, DIM = 50, 49, 16


def _tiny_model(seed):
  """A bidirectional toy 'model': per-token embedding mixed with the sequence mean."""
  rng = np.random.default_rng(seed)
  params = {"emb": rng.normal(size=(VOCAB, DIM)).astype(np.float32),
            "mix": rng.normal(size=(DIM, DIM)).astype(np.float32) / 4,
            "out": rng.normal(size=(DIM, VOCAB)).astype(np.float32)}

  def fn(p, tokens):
    h = p["emb"][tokens]
    h = jnp.tanh(h + h.mean(axis=1, keepdims=True) @ p["mix"])
    return (h @ p["out"]).at[..., MASK].set(-1e4)  # never predict the mask token

  return params, fn


def _numpy_llada(fn, params, prompt, steps, gen_length, block_length, cfg_scale):
  """LLaDA generate.py at temperature 0 with low-confidence remasking, in NumPy."""
  x = np.full((prompt.shape[0], prompt.shape[1] + gen_length), MASK, np.int64)
  x[:, :prompt.shape[1]] = prompt
  prompt_index = x != MASK
  num_blocks = gen_length // block_length
  steps = steps // num_blocks
  for b in range(num_blocks):
    lo, hi = prompt.shape[1] + b * block_length, prompt.shape[1] + (b + 1) * block_length
    mask_num = (x[:, lo:hi] == MASK).sum(1, keepdims=True)
    num_transfer = np.zeros((x.shape[0], steps), np.int64) + mask_num // steps
    for j in range(x.shape[0]):
      num_transfer[j, :int(mask_num[j, 0] % steps)] += 1
    for i in range(steps):
      mask_index = x == MASK
      if cfg_scale > 0:
        un_x = x.copy()
        un_x[prompt_index] = MASK
        logits = np.asarray(fn(params, jnp.asarray(np.concatenate([x, un_x]))), np.float64)
        cond, un = np.split(logits, 2)
        logits = un + (cfg_scale + 1) * (cond - un)
      else:
        logits = np.asarray(fn(params, jnp.asarray(x)), np.float64)
      x0 = logits.argmax(-1)
      p = np.exp(logits - logits.max(-1, keepdims=True))
      p /= p.sum(-1, keepdims=True)
      x0_p = np.take_along_axis(p, x0[..., None], -1)[..., 0]
      x0_p[:, hi:] = -np.inf
      x0 = np.where(mask_index, x0, x)
      confidence = np.where(mask_index, x0_p, -np.inf)
      for j in range(x.shape[0]):
        sel = np.argsort(-confidence[j], kind="stable")[:num_transfer[j, i]]
        x[j, sel] = x0[j, sel]
  return x


@pytest.mark.parametrize("steps,gen,block,cfg", [(8, 16, 8, 0.0), (6, 12, 4, 1.5), (5, 7, 7, 0.0)])
def test_llada_matches_numpy(steps, gen, block, cfg):
  params, fn = _tiny_model(np.random.default_rng().integers(1 << 30))
  prompt = np.random.default_rng().integers(0, MASK, size=(2, 5))
  with jax.default_matmul_precision("highest"):
    out = diffusion.llada_generate(diffusion.stateless(fn), params, prompt, jax.random.key(0),
                                   steps=steps, gen_length=gen, block_length=block,
                                   cfg_scale=cfg, mask_id=MASK)
    ref = _numpy_llada(fn, params, prompt, steps, gen, block, cfg)
  np.testing.assert_array_equal(np.asarray(out.tokens), ref)
  spb = steps // (gen // block)
  expected = np.tile(diffusion.llada_schedule(block, spb), gen // block)
  np.testing.assert_array_equal(np.asarray(out.transfer_counts), np.stack([expected] * 2, 1))


@pytest.mark.parametrize("remasking,temperature", [("random", 0.0), ("low_confidence", 1.0)])
def test_llada_fills_and_keeps_prompt(remasking, temperature):
  params, fn = _tiny_model(1)
  prompt = np.random.default_rng().integers(0, MASK, size=(3, 4))
  out = diffusion.llada_generate(diffusion.stateless(fn), params, prompt, jax.random.key(3),
                                 steps=6, gen_length=12, block_length=6, mask_id=MASK,
                                 remasking=remasking, temperature=temperature)
  tokens = np.asarray(out.tokens)
  assert not np.any(tokens == MASK)
  np.testing.assert_array_equal(tokens[:, :4], prompt)
  assert np.all(np.asarray(out.transfer_counts).sum(0) == 12)


def test_llada_schedule_reference():
  for block, spb in [(32, 64 // 8), (7, 3), (10, 4), (5, 5)]:
    s = diffusion.llada_schedule(block, spb)
    assert s.sum() == block and s.max() - s.min() <= 1 and np.all(np.diff(s) <= 0)
  assert diffusion.llada_schedule(10, 4).tolist() == [3, 3, 2, 2]


def test_invalid_settings():
  params, fn = _tiny_model(0)
  f = diffusion.stateless(fn)
  prompt = np.zeros((1, 2), np.int32)
  with pytest.raises(ConfigError, match="gen_length"):
    diffusion.llada_generate(f, params, prompt, jax.random.key(0), steps=4, gen_length=10,
                             block_length=4, mask_id=MASK)
  with pytest.raises(ConfigError, match="steps"):
    diffusion.llada_generate(f, params, prompt, jax.random.key(0), steps=5, gen_length=8,
                             block_length=4, mask_id=MASK)
  with pytest.raises(ConfigError, match="alg"):
    diffusion.dream_generate(f, params, prompt, jax.random.key(0), steps=4, gen_length=8,
                             alg="greedy", mask_id=MASK)


@pytest.mark.parametrize("alg,kwargs", [
    ("maskgit_plus", {}), ("topk_margin", {"top_k": 5}), ("entropy", {"top_p": 0.9}),
    ("maskgit_plus", {"alg_temp": 0.5, "temperature": 0.7}), ("origin", {"temperature": 0.5})])
def test_dream(alg, kwargs):
  params, fn = _tiny_model(2)
  prompt = np.random.default_rng().integers(0, MASK, size=(2, 6))
  steps, gen = 7, 20
  out = diffusion.dream_generate(diffusion.stateless(fn), params, prompt, jax.random.key(1),
                                 steps=steps, gen_length=gen, alg=alg, mask_id=MASK, **kwargs)
  tokens = np.asarray(out.tokens)
  assert not np.any(tokens == MASK)
  np.testing.assert_array_equal(tokens[:, :6], prompt)
  counts = np.asarray(out.transfer_counts)
  assert np.all(counts.sum(0) == gen)
  if alg != "origin":
    np.testing.assert_array_equal(counts, np.stack([diffusion.dream_schedule(gen, steps)] * 2, 1))


def test_dream_shifted_logits_and_greedy():
  """Position i takes the argmax of output i-1 (Dream's shift); step 1 reveals the most confident."""
  params, fn = _tiny_model(4)
  prompt = np.random.default_rng().integers(0, MASK, size=(1, 3))
  out = diffusion.dream_generate(diffusion.stateless(fn), params, prompt, jax.random.key(0),
                                 steps=1, gen_length=4, alg="maskgit_plus", mask_id=MASK)
  x = jnp.concatenate([jnp.asarray(prompt), jnp.full((1, 4), MASK)], 1)
  logits = np.asarray(fn(params, x))
  np.testing.assert_array_equal(np.asarray(out.tokens)[0, 3:], logits[0, 2:6].argmax(-1))


def test_top_p_filter_matches_sorted_rule():
  logits = jnp.asarray(np.random.default_rng().normal(size=(3, 11)), jnp.float32)
  out = np.asarray(diffusion._filter_top_p(logits, 0.6))
  for row, orig in zip(out, np.asarray(logits)):
    order = np.argsort(-orig)
    cum = np.cumsum(np.exp(orig[order]) / np.exp(orig).sum())
    n_keep = 1 + int(np.sum(cum[:-1] <= 0.6))
    assert set(np.flatnonzero(row > -1e30)) == set(order[:n_keep])
