"""SGL layer pruning through the KV-cached ``generate``: keep 1.0 equals the unpruned model (with
and without the cache) and pruned generation equals a by-hand greedy loop that drops the same
tokens at the same layer with the original position ids."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxvlm.generation import generate
from jaxvlm.models import multimodal as mm
from jaxvlm.models.llama.modeling import LlamaConfig, LlamaForCausalLM

# compile-bound (tiny shapes, eager ops): XLA's cheap compile mode (conftest)
pytestmark = pytest.mark.usefixtures("fast_compile")

IMG, N, NEW = 7, 6, 4


def _lm():
  cfg = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=8)
  return LlamaForCausalLM(cfg, rngs=nnx.Rngs(0))


def _prompt(rng, pad=(0, 3)):
  length = N + 6 + max(pad)
  rows = [np.concatenate([np.zeros(p, int), [9, 10], np.full(N, IMG),
                          rng.integers(8, 32, length - N - 2 - p)]) for p in pad]
  mask = np.stack([np.r_[np.zeros(p), np.ones(length - p)] for p in pad]).astype(np.int32)
  return np.stack(rows), mask


def _reference(lm, ids, mask, kept_index, layer):
  """Greedy loop without a cache: each step re-runs the whole sequence, dropping the pruned
  prompt tokens at ``layer``; generated tokens are kept and get positions after the prompt."""
  b, s = ids.shape
  pos = np.maximum(np.cumsum(mask, 1) - 1, 0)
  out = []
  for t in range(NEW):
    gen = np.asarray(out, int).T.reshape(b, t)
    full_ids = np.concatenate([ids, gen], 1)
    full_mask = np.concatenate([mask, np.ones((b, t), np.int32)], 1)
    full_pos = np.concatenate([pos, pos.max(1, keepdims=True) + 1 + np.arange(t)], 1)
    kept = np.concatenate([kept_index, np.broadcast_to(s + np.arange(t), (b, t))], 1)
    emb = lm.model.embed_tokens(jnp.asarray(full_ids))
    logits, _ = mm.forward_with_layer_pruning(lm, emb, full_mask,
                                              lm.model.rope_tables(jnp.asarray(full_pos)),
                                              layer, kept)
    out.append(np.asarray(jnp.argmax(logits[:, -1], -1)))
  return np.stack(out, 1)


@pytest.mark.parametrize("layer", [0, 2])
def test_keep_all_equals_unpruned_with_and_without_cache(layer):
  rng = np.random.default_rng(layer)
  lm, (ids, mask) = _lm(), _prompt(rng)
  pruned = mm.keep_visual_tokens(ids, mask, IMG, np.ones((2, N), bool))
  prune = mm.LayerPrune(jnp.asarray(pruned.kept_index), layer)
  with jax.default_matmul_precision("highest"):
    full = lm(jnp.asarray(ids), jnp.asarray(mask)).logits
    got = lm(jnp.asarray(ids), jnp.asarray(mask), prune=prune).logits
    real = pruned.attention_mask.astype(bool)
    src = np.maximum(pruned.kept_index, 0)
    want = np.take_along_axis(np.asarray(full), src[..., None], 1)
    np.testing.assert_allclose(np.asarray(got)[real], want[real], rtol=1e-5, atol=1e-5)
    a = generate(lm, ids, mask, NEW, prune=prune).new_tokens
    b = generate(lm, ids, mask, NEW).new_tokens
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("layer", [0, 2])
def test_pruned_generation_equals_by_hand_reference(layer):
  rng = np.random.default_rng(10 + layer)
  lm, (ids, mask) = _lm(), _prompt(rng)
  keep = np.stack([np.sort(rng.permutation(N)[:2]) for _ in range(2)])
  pruned = mm.keep_visual_tokens(ids, mask, IMG, keep)
  want = _reference(lm, ids, mask, pruned.kept_index, layer)
  prune = mm.LayerPrune(jnp.asarray(pruned.kept_index), layer)
  got = generate(lm, ids, mask, NEW, prune=prune).new_tokens
  np.testing.assert_array_equal(np.asarray(got), want)
  # the unpruned model answers differently on some row (the pruning did act)
  assert not np.array_equal(np.asarray(generate(lm, ids, mask, NEW).new_tokens), want) or layer
