"""HF-native InternVL (``InternVLForConditionalGeneration``) parity: multi-tile images."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import torch  # noqa: E402
import transformers  # noqa: E402

from conftest import assert_rel_close, perturb_  # noqa: E402
from jaxvlm.errors import ShapeError  # noqa: E402
from jaxvlm.models import load_pretrained, save_pretrained  # noqa: E402
from jaxvlm.models.clip.modeling import bicubic_matrix  # noqa: E402
from vlm_parity import check_parity, prompts  # noqa: E402

IMG, VOCAB, SIDE, PATCH = 120, 128, 56, 14  # 4x4 patches -> pixel shuffle -> 4 tokens per tile
TOKENS = (SIDE // PATCH // 2) ** 2


def tiny_hf_model(seed=0, **overrides):
  torch.manual_seed(seed)
  cfg = transformers.InternVLConfig(
      vision_config=dict(hidden_size=32, num_attention_heads=2, intermediate_size=64,
                         num_hidden_layers=2, image_size=SIDE, patch_size=PATCH,
                         layer_scale_init_value=0.5),
      text_config=dict(model_type="qwen2", hidden_size=48, num_attention_heads=4,
                       num_key_value_heads=2, intermediate_size=96, num_hidden_layers=2,
                       vocab_size=VOCAB),
      image_token_id=IMG, image_seq_length=TOKENS, **overrides)
  model = transformers.InternVLForConditionalGeneration(cfg).eval()
  perturb_(model, "lambda", "norm")
  return model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  hf = tiny_hf_model()
  path = str(tmp_path_factory.mktemp("internvl"))
  hf.save_pretrained(path)
  return hf, path


def test_multi_tile_parity_and_greedy(setup, tmp_path):
  hf, path = setup
  rng = np.random.default_rng(0)
  tiles = [3, 1]  # row 0: 2 tiles + thumbnail; row 1: one tile
  ids, mask = prompts(rng, IMG, [t * TOKENS for t in tiles], VOCAB)
  px = rng.standard_normal((sum(tiles), 3, SIDE, SIDE)).astype(np.float32)
  with torch.no_grad():
    ref_feats = hf.model.get_image_features(
        torch.tensor(px), vision_feature_layer=-1,
        vision_feature_select_strategy="default").pooler_output.numpy()
  model = check_parity(hf, path, ids, mask, px, ref_feats)
  assert model.config.tokens_per_image == TOKENS

  save_pretrained(model, str(tmp_path))  # our export reads back into transformers unchanged
  back = transformers.InternVLForConditionalGeneration.from_pretrained(str(tmp_path)).eval()
  with torch.no_grad():
    a = back(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
             pixel_values=torch.tensor(px)).logits.numpy()
    b = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
           pixel_values=torch.tensor(px)).logits.numpy()
  assert_rel_close(a, b, rtol=1e-6, where="re-exported logits")


def test_placeholder_count_mismatch_names_both_numbers(setup):
  _, path = setup
  model = load_pretrained(path)
  rng = np.random.default_rng(1)
  ids, mask = prompts(rng, IMG, [TOKENS + 1], VOCAB)
  px = rng.standard_normal((1, 3, SIDE, SIDE)).astype(np.float32)
  with pytest.raises(ShapeError, match=rf"got {TOKENS}.*{TOKENS + 1}"):
    model(ids, mask, pixel_values=px)


def test_vision_variants_qk_norm_rms_norm_final_norm(tmp_path):
  """InternViT-6B-style switches: q/k RMSNorm, RMSNorm blocks, final norm (no mean pooling)."""
  hf = tiny_hf_model(seed=1)
  cfg = hf.config
  cfg.vision_config.use_qk_norm, cfg.vision_config.norm_type = True, "rms_norm"
  cfg.vision_config.use_mean_pooling = False
  hf = transformers.InternVLForConditionalGeneration(cfg).eval()
  perturb_(hf, "lambda", "norm")
  hf.save_pretrained(str(tmp_path))
  model = load_pretrained(str(tmp_path))
  px = np.random.default_rng(2).standard_normal((2, 3, SIDE, SIDE)).astype(np.float32)
  with torch.no_grad():
    ref = hf.model.get_image_features(torch.tensor(px), vision_feature_layer=-1,
                                      vision_feature_select_strategy="default").pooler_output
  with jax.default_matmul_precision("highest"):
    ours = model.get_image_features(px)
  assert_rel_close(ours, ref.numpy(), where="features (qk_norm, rms_norm, final norm)")


def test_position_embeddings_interpolated_like_torch(setup):
  """Images of another size: the position table is resized exactly as ``F.interpolate`` bicubic."""
  grid = torch.randn(1, 5, 7, 7, dtype=torch.float64)
  for out in [(4, 4), (12, 9)]:
    want = torch.nn.functional.interpolate(grid, size=out, mode="bicubic", align_corners=False)
    got = np.einsum("hH,wW,cHW->chw", bicubic_matrix(7, out[0]), bicubic_matrix(7, out[1]),
                    grid[0].numpy())
    np.testing.assert_allclose(got, want[0].numpy(), rtol=1e-10, atol=1e-12)
  hf, path = setup
  model = load_pretrained(path)
  px = np.random.default_rng(3).standard_normal((1, 3, 2 * SIDE, 2 * SIDE)).astype(np.float32)
  with torch.no_grad():
    ref = hf.model.get_image_features(torch.tensor(px), vision_feature_layer=-1,
                                      vision_feature_select_strategy="default").pooler_output
  with jax.default_matmul_precision("highest"):
    ours = model.get_image_features(px)
  assert ours.shape == (1, 4 * TOKENS, 48)
  assert_rel_close(ours, ref.numpy(), where="features at twice the trained resolution")
