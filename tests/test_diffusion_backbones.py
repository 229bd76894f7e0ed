"""LLaDA / Dream backbones: load their checkpoint layouts; parity with transformers' LlamaModel /
Qwen2Model run bidirectionally (every layer's ``is_causal`` off, all-zero 4-D float mask)."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import save_file

from jaxvlm.models import load_pretrained, save_pretrained
from jaxvlm.models.dream import DreamConfig
from jaxvlm.models.llada import LLaDAConfig

TINY = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=257, rms_norm_eps=1e-5, rope_theta=5e5)


def _llada_name(name: str) -> str:
  """HF Llama tensor name -> LLaDA's (OLMo-style) name."""
  name = name.replace("model.embed_tokens", "model.transformer.wte")
  name = name.replace("model.norm", "model.transformer.ln_f")
  name = name.replace("lm_head", "model.transformer.ff_out")
  name = name.replace("model.layers", "model.transformer.blocks")
  for ours, theirs in (("self_attn.o_proj", "attn_out"), ("self_attn.", ""),
                       ("mlp.gate_proj", "ff_proj"), ("mlp.up_proj", "up_proj"),
                       ("mlp.down_proj", "ff_out"), ("input_layernorm", "attn_norm"),
                       ("post_attention_layernorm", "ff_norm")):
    name = name.replace(ours, theirs)
  return name


def _bidirectional_hf(model, ids):
  for layer in model.model.layers:
    layer.self_attn.is_causal = False
  mask = torch.zeros(ids.shape[0], 1, ids.shape[1], ids.shape[1])
  with torch.no_grad():
    out = model(torch.as_tensor(ids), attention_mask=mask, output_hidden_states=True)
  return [h.numpy() for h in out.hidden_states], out.logits.numpy()


def _compare(ours, hf_hidden, hf_logits, ids):
  with jax.default_matmul_precision("highest"):
    out = ours(ids, output_hidden_states=True)
  for i, (a, b) in enumerate(zip(out.hidden_states, hf_hidden)):
    rel = np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b)
    assert rel < 1e-4, f"hidden state {i}: relative error {rel}"
  rel = np.linalg.norm(np.asarray(out.logits) - hf_logits) / np.linalg.norm(hf_logits)
  assert rel < 1e-4, f"logits: relative error {rel}"


@pytest.mark.parametrize("seq", [12, 300])
def test_llada_parity(tmp_path, seq):
  torch.manual_seed(np.random.randint(1 << 30))
  cfg = transformers.LlamaConfig(**TINY, attn_implementation="eager")
  hf = transformers.LlamaForCausalLM(cfg).eval()
  state = {_llada_name(k): v.contiguous() for k, v in hf.state_dict().items()}
  save_file(state, os.path.join(tmp_path, "model.safetensors"))
  llada = dict(model_type="llada", d_model=64, n_layers=3, n_heads=4, n_kv_heads=2,
               mlp_hidden_size=96, vocab_size=257, embedding_size=257, rms_norm_eps=1e-5,
               rope_theta=5e5, weight_tying=False, mask_token_id=250)
  (tmp_path / "config.json").write_text(json.dumps(llada))
  ours = load_pretrained(str(tmp_path))
  assert isinstance(ours.config, LLaDAConfig) and not ours.config.causal
  assert ours.config.mask_token_id == 250
  ids = np.random.default_rng().integers(0, 257, size=(2, seq))
  _compare(ours, *_bidirectional_hf(hf, ids), ids)
  # Round trip: save in LLaDA names and read back.
  save_pretrained(ours, str(tmp_path / "again"))
  names = set(json.loads((tmp_path / "again" / "config.json").read_text()))
  assert {"d_model", "n_layers", "mask_token_id"} <= names
  again = load_pretrained(str(tmp_path / "again"))
  np.testing.assert_array_equal(np.asarray(again(ids[:, :8]).logits),
                                np.asarray(ours(ids[:, :8]).logits))


def test_dream_parity(tmp_path):
  torch.manual_seed(np.random.randint(1 << 30))
  cfg = transformers.Qwen2Config(**TINY, attn_implementation="eager", tie_word_embeddings=False)
  hf = transformers.Qwen2ForCausalLM(cfg).eval()
  save_file({k: v.contiguous() for k, v in hf.state_dict().items()},
            os.path.join(tmp_path, "model.safetensors"))
  dream = {**cfg.to_dict(), "model_type": "Dream", "mask_token_id": 251,
           "architectures": ["DreamModel"]}
  (tmp_path / "config.json").write_text(json.dumps(dream))
  ours = load_pretrained(str(tmp_path))
  assert isinstance(ours.config, DreamConfig) and ours.config.qkv_bias
  assert ours.config.mask_token_id == 251 and not ours.config.causal
  ids = np.random.default_rng().integers(0, 257, size=(2, 40))
  _compare(ours, *_bidirectional_hf(hf, ids), ids)
