"""LLaMA / Qwen2 decoder parity with transformers: logits and every hidden state, long prompts,
padded batches, greedy generation, and the save_pretrained round trip."""

import numpy as np
import pytest
import torch
import transformers

import jax
from conftest import assert_rel_close, perturb_
from jaxvlm.generation import generate
from jaxvlm.models import load_pretrained, save_pretrained

# compile-bound (tiny shapes, eager ops): XLA's cheap compile mode (conftest)
pytestmark = pytest.mark.usefixtures("fast_compile")

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
BASE = dict(vocab_size=160, hidden_size=64, intermediate_size=112, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
            pad_token_id=0)

CASES = {
    "llama3_untied": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
                      dict(rope_scaling=LLAMA3_ROPE, tie_word_embeddings=False)),
    "llama3_tied": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
                    dict(rope_scaling=LLAMA3_ROPE, tie_word_embeddings=True, rope_theta=5e5)),
    "llama_bias_mha": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
                       dict(attention_bias=True, num_key_value_heads=4)),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM,
              dict(rope_theta=1e6, tie_word_embeddings=True)),
    "qwen2_sliding": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM,
                      dict(use_sliding_window=True, sliding_window=48, max_window_layers=1)),
}


def build_hf(name: str, tmp_path, seed: int):
  config_cls, model_cls, extra = CASES[name]
  torch.manual_seed(seed)
  config = config_cls(**{**BASE, **extra})
  config._attn_implementation = "eager"
  model = model_cls(config).eval()
  perturb_(model, "norm.weight", ".bias", scale=0.1)
  path = tmp_path / name
  model.save_pretrained(path)
  return model, str(path)


def compare_forward(hf_model, model, ids, mask):
  with torch.no_grad():
    ref = hf_model(torch.tensor(ids), attention_mask=torch.tensor(mask), output_hidden_states=True)
  with jax.default_matmul_precision("highest"):
    out = model(ids, mask, output_hidden_states=True)
  valid = mask.astype(bool)
  assert len(out.hidden_states) == len(ref.hidden_states)
  for i, (a, b) in enumerate(zip(out.hidden_states, ref.hidden_states)):
    assert_rel_close(np.asarray(a)[valid], b.numpy()[valid], where=f"hidden_states[{i}]")
  assert_rel_close(np.asarray(out.logits)[valid], ref.logits.numpy()[valid], where="logits")


@pytest.mark.parametrize("name", list(CASES))
def test_forward_parity_long_prompt_and_padded_batch(name, tmp_path, rng):
  hf_model, path = build_hf(name, tmp_path, seed=int(rng.integers(1 << 30)))
  model = load_pretrained(path)
  ids = rng.integers(1, BASE["vocab_size"], (2, 320))
  compare_forward(hf_model, model, ids, np.ones_like(ids))
  ids, mask = rng.integers(1, BASE["vocab_size"], (3, 40)), np.ones((3, 40), np.int64)
  mask[1, :7] = 0  # left padding
  mask[2, :19] = 0
  ids[mask == 0] = 0
  compare_forward(hf_model, model, ids, mask)


@pytest.mark.parametrize("name", ["llama3_untied", "llama3_tied", "qwen2"])
def test_greedy_generation_matches_transformers(name, tmp_path, rng):
  hf_model, path = build_hf(name, tmp_path, seed=int(rng.integers(1 << 30)))
  model = load_pretrained(path)
  ids = rng.integers(1, BASE["vocab_size"], (2, 17))
  mask = np.ones_like(ids)
  mask[0, :5], ids[0, :5] = 0, 0
  with torch.no_grad():
    ref = hf_model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), do_sample=False,
                            max_new_tokens=32, eos_token_id=None, pad_token_id=0)
  with jax.default_matmul_precision("highest"):
    out = generate(model, ids, mask, max_new_tokens=32, eos_token_id=(), pad_token_id=0)
  np.testing.assert_array_equal(np.asarray(out.sequences), ref.numpy())


@pytest.mark.parametrize("name", ["llama3_tied", "qwen2_sliding"])
def test_save_pretrained_round_trip_through_transformers(name, tmp_path, rng):
  hf_model, path = build_hf(name, tmp_path, seed=int(rng.integers(1 << 30)))
  model = load_pretrained(path)
  out_dir = tmp_path / "ours"
  save_pretrained(model, str(out_dir), max_shard_bytes=100_000)  # forces several shards + index
  assert (out_dir / "model.safetensors.index.json").exists()
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(out_dir).eval()
  ids = torch.tensor(rng.integers(1, BASE["vocab_size"], (2, 64)))
  with torch.no_grad():
    np.testing.assert_allclose(reloaded(ids).logits.numpy(), hf_model(ids).logits.numpy(),
                               rtol=1e-5, atol=1e-5)
  ours_again = load_pretrained(str(out_dir))
  with jax.default_matmul_precision("highest"):
    np.testing.assert_array_equal(np.asarray(ours_again(ids.numpy()).logits),
                                  np.asarray(model(ids.numpy()).logits))


def test_parity_command_passes_on_a_checkpoint(tmp_path, rng, capsys):
  from jaxvlm import cli
  _, path = build_hf("qwen2", tmp_path, seed=int(rng.integers(1 << 30)))
  report = tmp_path / "parity.json"
  assert cli.main(["parity", path, "--length", "300", "--json", str(report)]) == 0
  assert "PASS" in capsys.readouterr().out and report.exists()


@pytest.mark.parametrize("impl", ["auto", "pallas"])
@pytest.mark.parametrize("causal", [True, False])
def test_attention_implementations_agree(impl, causal, rng):
  from jaxvlm.models import from_config
  cfg = {**BASE, "model_type": "llama"}
  seed = int(rng.integers(1 << 20))
  ref = from_config(cfg, seed=seed, causal=causal)
  fused = from_config(cfg, seed=seed, causal=causal, attention_impl=impl)
  ids = rng.integers(0, BASE["vocab_size"], (2, 200))  # not a multiple of the kernel's block
  with jax.default_matmul_precision("highest"):
    assert_rel_close(fused(ids).logits, ref(ids).logits, rtol=1e-5, where=impl)
