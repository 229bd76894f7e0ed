"""Qwen2.5-VL parity with transformers: tiny random model, two images of different sizes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import torch  # noqa: E402
import transformers  # noqa: E402

from jaxvlm.generation import generate  # noqa: E402
from jaxvlm.models import load_pretrained, save_pretrained  # noqa: E402
from jaxvlm.models import multimodal as mm  # noqa: E402

IMG, START, END = 100, 102, 103


def tiny_hf_model(seed=0):
  torch.manual_seed(seed)
  cfg = transformers.Qwen2_5_VLConfig(
      text_config=dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=2,
                       rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                        "mrope_section": [2, 3, 3]},
                       tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
      vision_config=dict(depth=3, hidden_size=32, intermediate_size=48, num_heads=2,
                         out_hidden_size=64, fullatt_block_indexes=[1], window_size=56),
      image_token_id=IMG, video_token_id=101, vision_start_token_id=START,
      vision_end_token_id=END, tie_word_embeddings=False)
  return transformers.Qwen2_5_VLForConditionalGeneration(cfg).eval()


def two_image_prompt(rng, processor):
  """Text, image A (112x84), text, image B (56x140), text; batch of one."""
  images = [rng.integers(0, 256, size=(112, 84, 3), dtype=np.uint8),
            rng.integers(0, 256, size=(56, 140, 3), dtype=np.uint8)]
  px = processor(images=images, return_tensors="np")
  grid = px["image_grid_thw"]
  ids = [rng.integers(3, 99, size=4)]
  for t, h, w in grid:
    ids += [[START], np.full(t * h * w // 4, IMG), [END], rng.integers(3, 99, size=5)]
  return np.concatenate(ids)[None].astype(np.int64), px["pixel_values"], grid


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  hf = tiny_hf_model()
  path = str(tmp_path_factory.mktemp("qwen25vl"))
  hf.save_pretrained(path)
  processor = transformers.Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=224 * 224)
  return hf, path, processor


def test_parity_features_logits_hidden_and_greedy(setup):
  hf, path, processor = setup
  model = load_pretrained(path)
  ids, px, grid = two_image_prompt(np.random.default_rng(0), processor)
  assert len({tuple(g) for g in grid}) == 2
  mask = np.ones_like(ids)
  with torch.no_grad():
    t_px, t_grid = torch.tensor(px), torch.tensor(grid)
    ref_feats = torch.cat(hf.model.get_image_features(t_px, t_grid).pooler_output).numpy()
    ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), pixel_values=t_px,
             image_grid_thw=t_grid, mm_token_type_ids=torch.tensor((ids == IMG).astype(np.int64)),
             output_hidden_states=True)
  with jax.default_matmul_precision("highest"):
    feats = model.encode_images(px, grid)
    out = model(ids, mask, pixel_values=px, image_grid_thw=grid, output_hidden_states=True)
  rel = lambda a, b: np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b))
  assert rel(feats, ref_feats) < 1e-4
  assert rel(out.logits, ref.logits.numpy()) < 1e-4
  assert len(out.hidden_states) == len(ref.hidden_states)
  for ours, theirs in zip(out.hidden_states, ref.hidden_states):
    assert rel(ours, theirs.numpy()) < 1e-4

  with torch.no_grad():
    ref_gen = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                          pixel_values=t_px, image_grid_thw=t_grid,
                          mm_token_type_ids=torch.tensor((ids == IMG).astype(np.int64)),
                          max_new_tokens=16, min_new_tokens=16, do_sample=False).numpy()
  with jax.default_matmul_precision("highest"):
    gen = generate(model, ids, mask, 16, pixel_values=px, image_grid_thw=grid, eos_token_id=())
  np.testing.assert_array_equal(np.asarray(gen.sequences), ref_gen)


def test_rope_index_matches_hf_with_left_padding(setup):
  hf, path, processor = setup
  ids, _, grid = two_image_prompt(np.random.default_rng(1), processor)
  ids = np.concatenate([np.zeros((1, 3), np.int64), ids], 1)
  mask = (np.arange(ids.shape[1]) >= 3)[None].astype(np.int64)
  ref_pos, ref_delta = hf.model.get_rope_index(
      torch.tensor(ids), torch.tensor((ids == IMG).astype(np.int64)), torch.tensor(grid),
      attention_mask=torch.tensor(mask))
  pos, delta = load_pretrained(path).get_rope_index(ids, grid, mask)
  np.testing.assert_array_equal(pos, ref_pos.numpy())
  np.testing.assert_array_equal(delta, ref_delta.numpy())


def test_save_roundtrip_and_video_refused(setup, tmp_path):
  hf, path, processor = setup
  model = load_pretrained(path)
  save_pretrained(model, str(tmp_path))
  again = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(str(tmp_path)).eval()
  for (k, a), b in zip(hf.state_dict().items(), again.state_dict().values()):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)
  with pytest.raises(ValueError, match="video"):
    model.get_rope_index(np.array([[5, 101, 6]]), None)


@pytest.mark.parametrize("k", [0, 1, 4, 8])
def test_pruned_visual_tokens_generate_aligned(setup, k):
  """K of the N=8 tokens of image B kept (image A kept whole), SGL positions; non-empty output."""
  _, path, processor = setup
  model = load_pretrained(path)
  rng = np.random.default_rng(k)
  ids, px, grid = two_image_prompt(rng, processor)
  prep = model.prepare_inputs(ids, None, px, grid)
  n_a = int(np.prod(grid[0])) // 4
  n_b = int(np.prod(grid[1])) // 4
  keep = np.concatenate([np.ones(n_a, bool), np.isin(np.arange(n_b), rng.permutation(n_b)[:k])])
  pruned = mm.keep_visual_tokens(ids, None, IMG, keep[None], position_ids=prep["position_ids"])
  feats = mm.gather_kept_features(prep["visual_features"], [n_a + n_b], keep[None])
  assert (pruned.input_ids == IMG).sum() == n_a + k == feats.shape[0]
  gen = generate(model, pruned.input_ids, pruned.attention_mask, 4, visual_features=feats,
                 position_ids=jnp.asarray(pruned.position_ids), rope_deltas=jnp.asarray(pruned.rope_deltas))
  np.testing.assert_array_equal(np.asarray(gen.sequences[:, :pruned.input_ids.shape[1]]),
                                pruned.input_ids)
  assert int(gen.num_generated[0]) >= 1
