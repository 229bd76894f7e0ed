"""LLaVA-1.5 (``LlavaForConditionalGeneration``) parity, and K-of-N visual-token pruning."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import torch  # noqa: E402
import transformers  # noqa: E402

from conftest import assert_rel_close, perturb_  # noqa: E402
from jaxvlm.generation import generate  # noqa: E402
from jaxvlm.models import load_pretrained  # noqa: E402
from jaxvlm.models import multimodal as mm  # noqa: E402
from jaxvlm.sharding import LOGICAL_RULES_FSDP, LOGICAL_RULES_TP, make_mesh  # noqa: E402
from vlm_parity import check_parity, prompts  # noqa: E402

IMG, VOCAB, SIDE, PATCH = 120, 128, 42, 14
TOKENS = (SIDE // PATCH) ** 2  # CLS dropped


def tiny_hf_model(seed=0):
  torch.manual_seed(seed)
  cfg = transformers.LlavaConfig(
      vision_config=dict(model_type="clip_vision_model", hidden_size=32, num_attention_heads=2,
                         intermediate_size=64, num_hidden_layers=3, image_size=SIDE,
                         patch_size=PATCH),
      text_config=dict(model_type="llama", hidden_size=48, num_attention_heads=4,
                       num_key_value_heads=2, intermediate_size=96, num_hidden_layers=2,
                       vocab_size=VOCAB),
      image_token_index=IMG, image_seq_length=TOKENS)
  model = transformers.LlavaForConditionalGeneration(cfg).eval()
  perturb_(model, "norm")
  return model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  hf = tiny_hf_model()
  path = str(tmp_path_factory.mktemp("llava"))
  hf.save_pretrained(path)
  return hf, path


def test_parity_penultimate_layer_and_greedy(setup):
  hf, path = setup
  rng = np.random.default_rng(0)
  ids, mask = prompts(rng, IMG, [TOKENS, TOKENS], VOCAB)
  px = rng.standard_normal((2, 3, SIDE, SIDE)).astype(np.float32)
  with torch.no_grad():
    ref_feats = torch.cat(hf.model.get_image_features(
        torch.tensor(px), vision_feature_layer=-2,
        vision_feature_select_strategy="default").pooler_output).numpy()
  assert check_parity(hf, path, ids, mask, px, ref_feats).config.tokens_per_image == TOKENS


@pytest.mark.parametrize("k", [0, 1, TOKENS // 2, TOKENS])
def test_keep_k_of_n_generates_aligned(setup, k):
  _, path = setup
  model = load_pretrained(path)
  rng = np.random.default_rng(k)
  ids, mask = prompts(rng, IMG, [TOKENS, TOKENS], VOCAB)
  px = rng.standard_normal((2, 3, SIDE, SIDE)).astype(np.float32)
  feats = np.asarray(model.get_image_features(px)).reshape(-1, 48)
  keep = np.stack([np.sort(rng.choice(TOKENS, k, replace=False)) for _ in range(2)])
  pruned = mm.keep_visual_tokens(ids, mask, IMG, keep, keep_positions=False)
  kept = mm.gather_kept_features(feats, [TOKENS, TOKENS], keep)
  assert kept.shape[0] == int((pruned.input_ids == IMG).sum()) == 2 * k
  out = generate(model, pruned.input_ids, pruned.attention_mask, 5, image_features=kept,
                 eos_token_id=())
  assert out.sequences.shape == (2, pruned.input_ids.shape[1] + 5)
  np.testing.assert_array_equal(np.asarray(out.sequences[:, :-5]), pruned.input_ids)
  assert (np.asarray(out.num_generated) == 5).all()
  if k == TOKENS:  # keeping everything is the unpruned prompt
    full = generate(model, ids, mask, 5, pixel_values=px, eos_token_id=())
    np.testing.assert_array_equal(np.asarray(full.new_tokens), np.asarray(out.new_tokens))


def test_clip_vision_model_family(tmp_path):
  torch.manual_seed(3)
  cfg = transformers.CLIPVisionConfig(hidden_size=32, num_attention_heads=2, intermediate_size=64,
                                      num_hidden_layers=2, image_size=SIDE, patch_size=PATCH)
  hf = transformers.CLIPVisionModel(cfg).eval()
  hf.save_pretrained(str(tmp_path))
  model = load_pretrained(str(tmp_path))
  px = np.random.default_rng(3).standard_normal((2, 3, SIDE, SIDE)).astype(np.float32)
  with torch.no_grad():
    ref = hf(pixel_values=torch.tensor(px), output_hidden_states=True)
  with jax.default_matmul_precision("highest"):
    last = model(px)
    penultimate = model.hidden_state(px, -2)
  assert_rel_close(last, ref.last_hidden_state.numpy(), where="last_hidden_state")
  assert_rel_close(penultimate, ref.hidden_states[-2].numpy(), where="hidden_states[-2]")


def test_text_to_visual_attention_hook(setup):
  _, path = setup
  model = load_pretrained(path)
  rng = np.random.default_rng(4)
  ids, mask = prompts(rng, IMG, [TOKENS, TOKENS], VOCAB)
  px = rng.standard_normal((2, 3, SIDE, SIDE)).astype(np.float32)
  out = model(ids, mask, pixel_values=px, output_attentions=True)
  last = np.zeros_like(ids, bool)
  last[:, -1] = True
  att = mm.text_to_visual_attention(out.attentions, last, ids == IMG)
  assert att.shape == (2, 2, 4, 1, TOKENS)  # [L, B, H, queries, visual]
  assert np.all((np.asarray(att) > 0) & (np.asarray(att) < 1))


@pytest.mark.parametrize("sizes", [(1, 8, 1), (2, 1, 4)])
def test_load_onto_mesh(setup, sizes):
  _, path = setup
  mesh = make_mesh(dict(zip(("data", "fsdp", "tensor"), sizes)))
  rules = LOGICAL_RULES_FSDP if sizes[1] > 1 else LOGICAL_RULES_TP
  model = load_pretrained(path, mesh=mesh, rules=rules)
  fc1 = model.vision_tower.layers[0].mlp.fc1.kernel[...]
  assert fc1.addressable_shards[0].data.size < fc1.size
  rng = np.random.default_rng(5)
  ids, mask = prompts(rng, IMG, [TOKENS], VOCAB)
  px = rng.standard_normal((1, 3, SIDE, SIDE)).astype(np.float32)
  with jax.default_matmul_precision("highest"):
    got = model(ids, mask, pixel_values=px).logits
    want = load_pretrained(path)(ids, mask, pixel_values=px).logits
  assert_rel_close(got, want, rtol=1e-5, where="sharded logits")
