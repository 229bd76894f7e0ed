"""CLIP dual encoder (``model_type`` clip) parity with a tiny random HF ``CLIPModel``: every
hidden state of both towers, pooled + projected features, logits; save round trip."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
import transformers

from conftest import assert_rel_close, perturb_
from jaxvlm.models import load_pretrained, save_pretrained

EOS, VOCAB = 99, 100


def tiny_hf_clip(eos=EOS, seed=0):
  torch.manual_seed(seed)
  cfg = transformers.CLIPConfig(
      text_config=dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                       num_attention_heads=4, max_position_embeddings=24, eos_token_id=eos),
      vision_config=dict(hidden_size=24, intermediate_size=40, num_hidden_layers=2,
                         num_attention_heads=2, image_size=28, patch_size=7),
      projection_dim=16)
  return perturb_(transformers.CLIPModel(cfg).eval(), "norm", "logit_scale")


def _features(out):
  return (out.pooler_output if hasattr(out, "pooler_output") else out).numpy()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  hf = tiny_hf_clip()
  path = str(tmp_path_factory.mktemp("clip"))
  hf.save_pretrained(path)
  return hf, path


def _text_batch(rng, eos=EOS):
  """Right-padded rows of different lengths, each ending in EOS (as the CLIP tokenizer does)."""
  lengths = [9, 5, 12]
  ids = np.zeros((3, 12), np.int64)
  mask = np.zeros_like(ids)
  for r, n in enumerate(lengths):
    ids[r, :n] = np.append(rng.integers(3, 90, n - 1), eos)
    mask[r, :n] = 1
  return ids, mask


def test_every_layer_features_and_logits_match(folder, rng):
  hf, path = folder
  model = load_pretrained(path)
  ids, mask = _text_batch(rng)
  px = rng.standard_normal((2, 3, 28, 28)).astype(np.float32)
  t_ids, t_mask, t_px = map(torch.tensor, (ids, mask, px))
  with torch.no_grad():
    text_ref = hf.text_model(input_ids=t_ids, attention_mask=t_mask, output_hidden_states=True)
    vis_ref = hf.vision_model(pixel_values=t_px, output_hidden_states=True)
    ref = hf(input_ids=t_ids, attention_mask=t_mask, pixel_values=t_px)
    text_feat = _features(hf.get_text_features(input_ids=t_ids, attention_mask=t_mask))
    image_feat = _features(hf.get_image_features(pixel_values=t_px))
  with jax.default_matmul_precision("highest"):
    last, pooled, hidden = model.text_model(ids, mask)
    out = model(ids, px, mask)
    ours_text, ours_image = model.get_text_features(ids, mask), model.get_image_features(px)
    vis_hidden = [model.vision_model.hidden_state(px, i) for i in range(3)]
    vis_pooled = model.vision_model.pooled(px)
  valid = mask.astype(bool)
  assert len(hidden) == len(text_ref.hidden_states) == 3
  for i, (a, b) in enumerate(zip(hidden, text_ref.hidden_states)):
    assert_rel_close(np.asarray(a)[valid], b.numpy()[valid], where=f"text hidden_states[{i}]")
  assert_rel_close(np.asarray(last)[valid], text_ref.last_hidden_state.numpy()[valid], where="text")
  assert_rel_close(pooled, text_ref.pooler_output.numpy(), where="text pooled")
  for i, (a, b) in enumerate(zip(vis_hidden, vis_ref.hidden_states)):
    assert_rel_close(a, b.numpy(), where=f"vision hidden_states[{i}]")
  assert_rel_close(vis_pooled, vis_ref.pooler_output.numpy(), where="vision pooled")
  assert_rel_close(ours_text, text_feat, where="get_text_features")
  assert_rel_close(ours_image, image_feat, where="get_image_features")
  assert_rel_close(out["logits_per_image"], ref.logits_per_image.numpy(), where="logits")
  assert abs(np.linalg.norm(np.asarray(ours_text), axis=-1) - 1).max() > 1e-2  # not normalised


def test_legacy_eos_two_pools_at_highest_id_and_roundtrip(tmp_path, rng):
  hf = tiny_hf_clip(eos=2, seed=1)
  hf.save_pretrained(str(tmp_path / "a"))
  model = load_pretrained(str(tmp_path / "a"))
  ids, mask = _text_batch(rng, eos=VOCAB - 1)
  with torch.no_grad():
    ref = _features(hf.get_text_features(input_ids=torch.tensor(ids),
                                         attention_mask=torch.tensor(mask)))
  with jax.default_matmul_precision("highest"):
    assert_rel_close(model.get_text_features(ids, mask), ref, where="legacy eos pooling")
  save_pretrained(model, str(tmp_path / "b"))
  again = transformers.CLIPModel.from_pretrained(str(tmp_path / "b")).eval()
  for (k, a), b in zip(hf.state_dict().items(), again.state_dict().values()):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)
