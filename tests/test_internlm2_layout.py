"""InternLM2 / InternVL2 checkpoint layout: tiny checkpoints written with the published tensor
names (packed ``wqkv``, ``w1/w3/w2``, ``attention_norm``/``ffn_norm``, ``tok_embeddings``,
``output``) load and match ``transformers`` run on the unpacked weights."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from flax import nnx

import torch  # noqa: E402
import transformers  # noqa: E402

from safetensors.numpy import save_file  # noqa: E402

from conftest import assert_rel_close, perturb_  # noqa: E402
from jaxvlm.models import load_pretrained, registry, save_pretrained, weights  # noqa: E402

H, HEADS, KV, D, INTER, VOCAB, LAYERS = 64, 4, 2, 16, 96, 128, 2


def pack_wqkv(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Published packing: for each KV head j, its g query heads, then k_j, then v_j (rows)."""
  g = HEADS // KV
  blocks = []
  for j in range(KV):
    blocks += [q[(j * g + i) * D:(j * g + i + 1) * D] for i in range(g)]
    blocks += [k[j * D:(j + 1) * D], v[j * D:(j + 1) * D]]
  return np.concatenate(blocks, axis=0)


INTERNLM2_LM_NAMES = {
    "embed_tokens": "tok_embeddings", "self_attn.o_proj": "attention.wo",
    "mlp.gate_proj": "feed_forward.w1", "mlp.up_proj": "feed_forward.w3",
    "mlp.down_proj": "feed_forward.w2", "input_layernorm": "attention_norm",
    "post_attention_layernorm": "ffn_norm", "lm_head": "output"}


def internlm2_tensors(llama_state: dict, prefix: str = "") -> dict:
  """A HF LLaMA state dict -> the published InternLM2 names (``prefix`` for ``language_model.``)."""
  out = {}
  for name, t in llama_state.items():
    if any(p in name for p in ("q_proj", "k_proj", "v_proj")):
      continue
    for old, new in INTERNLM2_LM_NAMES.items():
      name = name.replace(old, new)
    out[prefix + name] = t
  for i in range(LAYERS):
    a = f"model.layers.{i}.self_attn."
    out[f"{prefix}model.layers.{i}.attention.wqkv.weight"] = pack_wqkv(
        *(llama_state[a + p + ".weight"] for p in ("q_proj", "k_proj", "v_proj")))
  return out


def llm_config() -> dict:
  return dict(architectures=["InternLM2ForCausalLM"], model_type="internlm2", hidden_size=H,
              num_attention_heads=HEADS, num_key_value_heads=KV, intermediate_size=INTER,
              num_hidden_layers=LAYERS, vocab_size=VOCAB, rms_norm_eps=1e-6, rope_theta=1e6,
              bias=False, hidden_act="silu", max_position_embeddings=4096,
              rope_scaling={"type": "dynamic", "factor": 2.0}, tie_word_embeddings=False)


def llama_reference(seed=0):
  torch.manual_seed(seed)
  cfg = transformers.LlamaConfig(hidden_size=H, num_attention_heads=HEADS, num_key_value_heads=KV,
                                 intermediate_size=INTER, num_hidden_layers=LAYERS,
                                 vocab_size=VOCAB, rms_norm_eps=1e-6, rope_theta=1e6,
                                 max_position_embeddings=4096)
  model = transformers.LlamaForCausalLM(cfg).eval()
  perturb_(model, "norm")
  return model


def write(folder, tensors, config):
  os.makedirs(folder, exist_ok=True)
  save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
            os.path.join(folder, "model.safetensors"))
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(config, f)


def test_internlm2_packed_layout_matches_llama(tmp_path):
  ref = llama_reference()
  state = {k: v.numpy() for k, v in ref.state_dict().items()}
  tensors = internlm2_tensors(state)
  assert "model.layers.1.attention.wqkv.weight" in tensors and "output.weight" in tensors
  write(tmp_path, tensors, llm_config())
  model = load_pretrained(str(tmp_path))
  ids = np.random.default_rng(0).integers(0, VOCAB, size=(2, 40))
  with torch.no_grad():
    want = ref(input_ids=torch.tensor(ids)).logits.numpy()
  with jax.default_matmul_precision("highest"):
    got = model(ids).logits
  assert_rel_close(got, want, where="internlm2 logits")
  family = registry.get_family("internlm2")
  back = weights.export_tensors(model, family.rules(model.config))
  assert sorted(back) == sorted(tensors)
  for name, t in tensors.items():
    np.testing.assert_array_equal(back[name], t, err_msg=name)
  save_pretrained(model, str(tmp_path / "again"))
  again = load_pretrained(str(tmp_path / "again"))
  np.testing.assert_array_equal(np.asarray(again(ids).logits), np.asarray(model(ids).logits))


def test_wqkv_split_is_per_kv_group():
  from jaxvlm.models import internlm2
  cfg = internlm2.config_from_hf(llm_config())
  split, merge = internlm2.wqkv_split(cfg)
  rng = np.random.default_rng(1)
  q, k, v = (rng.standard_normal((n * D, H)) for n in (HEADS, KV, KV))
  parts = split(pack_wqkv(q, k, v))
  for a, b in zip(parts, (k, q, v)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(merge(parts), pack_wqkv(q, k, v))


SIDE, PATCH, IMG = 56, 14, 120
VISION_NAMES = {
    "vision_tower.embeddings.cls_token": "vision_model.embeddings.class_embedding",
    "vision_tower.embeddings.position_embeddings": "vision_model.embeddings.position_embedding",
    "vision_tower.embeddings.patch_embeddings.projection":
        "vision_model.embeddings.patch_embedding",
    "vision_tower.encoder.layer.": "vision_model.encoder.layers.",
    "attention.projection_layer": "attn.proj", "lambda_1": "ls1", "lambda_2": "ls2",
    "layernorm_before": "norm1", "layernorm_after": "norm2",
    "multi_modal_projector.layer_norm": "mlp1.0", "multi_modal_projector.linear_1": "mlp1.1",
    "multi_modal_projector.linear_2": "mlp1.3"}


def test_internvl_chat_layout_matches_hf_internvl(tmp_path):
  torch.manual_seed(0)
  hf_cfg = transformers.InternVLConfig(
      vision_config=dict(hidden_size=32, num_attention_heads=2, intermediate_size=64,
                         num_hidden_layers=2, image_size=SIDE, patch_size=PATCH,
                         attention_bias=True),
      text_config=dict(model_type="llama", hidden_size=H, num_attention_heads=HEADS,
                       num_key_value_heads=KV, intermediate_size=INTER, num_hidden_layers=LAYERS,
                       vocab_size=VOCAB, rms_norm_eps=1e-6, rope_theta=1e6,
                       max_position_embeddings=4096),
      image_token_id=IMG, tie_word_embeddings=False)
  hf = transformers.InternVLForConditionalGeneration(hf_cfg).eval()
  perturb_(hf, "lambda", "norm")
  hf.save_pretrained(tmp_path / "hf")
  saved = weights.read_safetensors_folder(str(tmp_path / "hf"))
  state = {n: saved.get(n) for n in saved.keys()}
  lm = {n[len("language_model."):]: t for n, t in state.items() if n.startswith("language_model.")}
  tensors = internlm2_tensors(lm, "language_model.")
  for name, t in state.items():
    if name.startswith("language_model.") or any(p in name for p in ("q_proj", "k_proj", "v_proj")):
      continue
    for old, new in VISION_NAMES.items():
      name = name.replace(old, new)
    tensors[name] = t
  for i in range(2):
    a = f"vision_tower.encoder.layer.{i}.attention."
    for leaf in ("weight", "bias"):
      tensors[f"vision_model.encoder.layers.{i}.attn.qkv.{leaf}"] = np.concatenate(
          [state[f"{a}{p}.{leaf}"] for p in ("q_proj", "k_proj", "v_proj")])
  vision = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, num_hidden_layers=2,
                image_size=SIDE, patch_size=PATCH, qkv_bias=True, qk_normalization=False,
                norm_type="layer_norm", layer_norm_eps=1e-6, hidden_act="gelu", num_channels=3)
  write(tmp_path / "chat", tensors, dict(
      architectures=["InternVLChatModel"], model_type="internvl_chat", vision_config=vision,
      llm_config=llm_config(), select_layer=-1, downsample_ratio=0.5, ps_version="v2",
      template="internlm2-chat"))
  model = load_pretrained(str(tmp_path / "chat"), image_token_id=IMG)
  rng = np.random.default_rng(0)
  tokens = (SIDE // PATCH // 2) ** 2 * 2  # two tiles
  ids = np.concatenate([rng.integers(3, 100, 4), np.full(tokens, IMG), rng.integers(3, 100, 5)])
  ids = ids[None]
  px = rng.standard_normal((2, 3, SIDE, SIDE)).astype(np.float32)
  with torch.no_grad():
    want = hf(input_ids=torch.tensor(ids), pixel_values=torch.tensor(px)).logits.numpy()
  with jax.default_matmul_precision("highest"):
    got = model(ids, pixel_values=px).logits
  assert_rel_close(got, want, where="internvl_chat logits")
  back = weights.export_tensors(model, registry.get_family("internvl_chat").rules(model.config))
  assert sorted(back) == sorted(tensors)
  for name, t in tensors.items():
    np.testing.assert_array_equal(back[name], t, err_msg=name)
