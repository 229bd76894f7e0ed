"""The merge contract: scatter, K-of-N pruning, layer pruning and attention extraction."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxvlm.errors import ShapeError
from jaxvlm.generation import generate
from jaxvlm.models import multimodal as mm
from jaxvlm.models.llama.modeling import LlamaConfig, LlamaForCausalLM

IMG = 7
N = 6  # visual tokens per row


def _lm(seed=0):
  cfg = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=8)
  return LlamaForCausalLM(cfg, rngs=nnx.Rngs(seed))


def _prompt(rng, pad=(0, 2)):
  """Two left-padded rows: text, N image tokens, text."""
  rows, length = [], N + 5 + max(pad)
  for p in pad:
    text = rng.integers(8, 32, size=length - N - p)
    rows.append(np.concatenate([np.zeros(p, int), text[:2], np.full(N, IMG), text[2:]]))
  ids = np.stack(rows)
  mask = np.stack([np.r_[np.zeros(p), np.ones(ids.shape[1] - p)] for p in pad]).astype(np.int32)
  return ids, mask


class _Wrapped(nnx.Module):
  """Minimal VLM: a decoder whose prefill merges given visual features (generation hook)."""

  def __init__(self, lm):
    self.lm = lm

  def init_cache(self, batch, max_len):
    return self.lm.init_cache(batch, max_len)

  def prefill_inputs(self, input_ids, attention_mask, features):
    emb = self.lm.model.embed_tokens(input_ids)
    return {"inputs_embeds": mm.merge_visual(emb, input_ids, features, IMG)}, {}

  def __call__(self, **kw):
    return self.lm(**kw)


def test_merge_visual_scatters_in_order_and_rejects_mismatch():
  rng = np.random.default_rng(0)
  ids, _ = _prompt(rng)
  emb = jnp.asarray(rng.normal(size=ids.shape + (4,)), jnp.float32)
  feats = jnp.asarray(rng.normal(size=(2 * N, 4)), jnp.float32)
  out = mm.merge_visual(emb, jnp.asarray(ids), feats, IMG)
  np.testing.assert_array_equal(np.asarray(out)[ids == IMG], np.asarray(feats))
  np.testing.assert_array_equal(np.asarray(out)[ids != IMG], np.asarray(emb)[ids != IMG])
  with pytest.raises(ShapeError, match=r"got 11.*12"):
    mm.merge_visual(emb, jnp.asarray(ids), feats[:-1], IMG)


@pytest.mark.parametrize("k", [0, 1, N // 2, N])
@pytest.mark.parametrize("keep_positions", [True, False])
def test_keep_k_of_n_aligned_and_generates(k, keep_positions):
  rng = np.random.default_rng(k)
  ids, mask = _prompt(rng)
  pos3 = np.stack([np.maximum(np.cumsum(mask, 1) - 1, 0) + a for a in range(3)])  # M-RoPE-like
  keep = np.stack([rng.permutation(N)[:k] for _ in range(2)]) if k else np.zeros((2, 0), int)
  out = mm.keep_visual_tokens(ids, mask, IMG, keep, position_ids=pos3,
                              keep_positions=keep_positions)
  real = out.kept_index >= 0
  assert out.input_ids.shape == out.attention_mask.shape == out.position_ids.shape[1:]
  np.testing.assert_array_equal(out.attention_mask.astype(bool), real)
  np.testing.assert_array_equal((out.input_ids == IMG).sum(1), [k, k])
  for r in range(2):
    np.testing.assert_array_equal(out.input_ids[r][real[r]], ids[r][out.kept_index[r][real[r]]])
    assert np.all(np.diff(out.kept_index[r][real[r]]) > 0)
    expect = (pos3[:, r][:, out.kept_index[r][real[r]]] if keep_positions
              else np.broadcast_to(np.arange(real[r].sum()), (3, real[r].sum())))
    np.testing.assert_array_equal(out.position_ids[:, r][:, real[r]], expect)
  assert real[:, -1].all() and (~real[:, :1] | real[:, -1:]).all()  # left padded

  feats = jnp.asarray(rng.normal(size=(2 * N, 32)), jnp.float32)
  kept = mm.gather_kept_features(feats, [N, N], keep)
  assert kept.shape == (2 * k, 32)
  if k:
    np.testing.assert_array_equal(np.asarray(kept)[:k], np.asarray(feats)[np.sort(keep[0])])
  res = generate(_Wrapped(_lm()), out.input_ids, out.attention_mask, 4, features=kept)
  assert res.sequences.shape == (2, out.input_ids.shape[1] + 4)
  np.testing.assert_array_equal(np.asarray(res.sequences[:, :out.input_ids.shape[1]]),
                                out.input_ids)
  assert (np.asarray(res.num_generated) >= 1).all()
  bad = kept[1:] if k else feats[:1]  # one visual token more or fewer than placeholders
  with pytest.raises(ShapeError):
    mm.merge_visual(jnp.zeros(out.input_ids.shape + (32,)), out.input_ids, bad, IMG)


def test_keep_rejects_out_of_range():
  ids, mask = _prompt(np.random.default_rng(1))
  with pytest.raises(ShapeError):
    mm.keep_visual_tokens(ids, mask, IMG, np.array([[0, N], [0, 1]]))
  with pytest.raises(ShapeError):
    mm.keep_visual_tokens(ids, mask, IMG, np.ones((2, N + 1), bool))


def test_layer_pruning_matches_pruned_prompt_and_full_model():
  rng = np.random.default_rng(2)
  lm = _lm(1)
  ids, mask = _prompt(rng)
  keep = np.stack([rng.permutation(N)[:2] for _ in range(2)])
  pruned = mm.keep_visual_tokens(ids, mask, IMG, keep)
  emb = lm.model.embed_tokens(jnp.asarray(ids))
  pos = jnp.asarray(np.maximum(np.cumsum(mask, 1) - 1, 0))
  tables = lm.model.rope_tables(pos)
  with jax.default_matmul_precision("highest"):
    logits0, _ = mm.forward_with_layer_pruning(lm, emb, mask, tables, 0, pruned.kept_index)
    ref = lm(jnp.asarray(pruned.input_ids), jnp.asarray(pruned.attention_mask),
             jnp.asarray(pruned.position_ids)).logits
    real = pruned.attention_mask.astype(bool)
    np.testing.assert_allclose(np.asarray(logits0)[real], np.asarray(ref)[real], rtol=1e-5,
                               atol=1e-5)
    n_layers = lm.config.num_hidden_layers
    logits_l, hs = mm.forward_with_layer_pruning(lm, emb, mask, tables, n_layers,
                                                 pruned.kept_index, output_hidden_states=True)
    full = lm(jnp.asarray(ids), jnp.asarray(mask)).logits
    src = np.maximum(pruned.kept_index, 0)
    np.testing.assert_allclose(np.asarray(logits_l)[real],
                               np.take_along_axis(np.asarray(full), src[..., None], 1)[real],
                               rtol=1e-5, atol=1e-5)
    assert len(hs) == n_layers + 1 and hs[-1].shape[1] == pruned.input_ids.shape[1]


def test_text_to_visual_attention_selects_query_rows_and_visual_columns():
  rng = np.random.default_rng(3)
  lm = _lm(2)
  ids, mask = _prompt(rng, pad=(0, 0))
  out = lm(jnp.asarray(ids), jnp.asarray(mask), output_attentions=True)
  visual = ids == IMG
  query = np.zeros_like(visual)
  query[:, -2:] = True
  a = mm.text_to_visual_attention(out.attentions, query, visual)
  assert a.shape == (3, 2, 4, 2, N)
  full = np.asarray(out.attentions[1])
  v_cols = np.nonzero(visual[1])[0]
  np.testing.assert_allclose(np.asarray(a)[1, 1], full[1][:, -2:][:, :, v_cols], rtol=1e-6)
