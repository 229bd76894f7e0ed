"""Sampling filters, EOS stopping and padded batches of the autoregressive generator."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvlm.generation import generate, sample_logits
from jaxvlm.models import from_config

# compile-bound (tiny shapes, eager ops): XLA's cheap compile mode (conftest)
pytestmark = pytest.mark.usefixtures("fast_compile")

TINY = dict(model_type="llama", vocab_size=50, hidden_size=32, intermediate_size=48,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


def test_top_k_and_top_p_only_sample_allowed_tokens(rng):
  logits = jnp.asarray(rng.normal(size=(4, 50)) * 3, jnp.float32)
  keys = jax.random.split(jax.random.key(int(rng.integers(1 << 30))), 200)
  top3 = np.argsort(-np.asarray(logits), axis=-1)[:, :3]
  draws = np.stack([np.asarray(sample_logits(logits, k, temperature=1.0, top_k=3)) for k in keys])
  assert all(np.isin(draws[:, b], top3[b]).all() for b in range(4))
  probs = np.asarray(jax.nn.softmax(logits, -1))
  order = np.argsort(-probs, axis=-1)
  draws = np.stack([np.asarray(sample_logits(logits, k, temperature=1.0, top_p=0.5)) for k in keys])
  for b in range(4):
    before = np.cumsum(probs[b, order[b]]) - probs[b, order[b]]
    allowed = order[b][before <= 0.5]
    assert np.isin(draws[:, b], allowed).all()


def test_greedy_is_argmax():
  logits = jnp.asarray([[0.1, 2.0, -1.0], [3.0, 0.0, 2.9]])
  np.testing.assert_array_equal(sample_logits(logits, jax.random.key(0)), [1, 0])


def test_eos_stops_and_pads_and_prompt_is_kept(rng):
  model = from_config(TINY, seed=int(rng.integers(1 << 20)))
  ids = rng.integers(1, 50, (3, 6))
  mask = np.ones_like(ids)
  mask[1, :2], ids[1, :2] = 0, 0
  free = np.asarray(generate(model, ids, mask, 12).sequences)
  eos = int(free[0, 6 + 3])  # the 4th generated token of row 0 becomes EOS
  out = generate(model, ids, mask, 12, eos_token_id=eos, pad_token_id=0)
  seq = np.asarray(out.sequences)
  np.testing.assert_array_equal(seq[:, :6], ids)
  for b in range(3):
    new = free[b, 6:]
    hits = np.flatnonzero(new == eos)
    stop = hits[0] + 1 if hits.size else 12
    np.testing.assert_array_equal(seq[b, 6:6 + stop], new[:stop])
    assert (seq[b, 6 + stop:] == 0).all()
    assert int(out.num_generated[b]) == stop


def test_sampling_is_reproducible_per_key(rng):
  model = from_config(TINY)
  ids = rng.integers(1, 50, (2, 5))
  kw = dict(temperature=0.8, top_k=10, top_p=0.9)
  a = generate(model, ids, None, 8, rng=jax.random.key(3), **kw).sequences
  b = generate(model, ids, None, 8, rng=jax.random.key(3), **kw).sequences
  np.testing.assert_array_equal(a, b)


def test_stop_check_interval_keeps_outputs(rng):
  """Testing "all rows stopped" every k steps (k = 1, 3, 4 with a remainder, > the step count)
  returns what testing every step returns, whether the rows stop early, late or never."""
  model = from_config(TINY, seed=int(rng.integers(1 << 20)))
  ids = rng.integers(1, 50, (3, 5))
  free = np.asarray(generate(model, ids, None, 11).sequences)[:, 5:]
  for eos in (int(free[0, 1]), int(free[2, 7]), 0):  # early in one row, late, (almost) never
    ref = generate(model, ids, None, 11, eos_token_id=eos, pad_token_id=0)
    for k in (3, 4, 20):
      out = generate(model, ids, None, 11, eos_token_id=eos, pad_token_id=0, stop_check_every=k)
      np.testing.assert_array_equal(out.sequences, ref.sequences)
      np.testing.assert_array_equal(out.num_generated, ref.num_generated)
  all_stop = [int(t) for t in free[:, 0]]  # every row stops at its first token
  out = generate(model, ids, None, 11, eos_token_id=all_stop, pad_token_id=0, stop_check_every=4)
  np.testing.assert_array_equal(out.num_generated, [1, 1, 1])
  assert (np.asarray(out.sequences)[:, 6:] == 0).all()
