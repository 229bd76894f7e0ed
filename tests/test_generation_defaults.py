"""Checkpoint generation defaults (EOS list, pad, sampling) and chat templates through real processors."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
import torch
import transformers

from jaxvlm.generation import generate
from jaxvlm.generation.defaults import GenerationDefaults
from jaxvlm.models import chat, load_pretrained, save_pretrained
from jaxvlm.models.chat import load_processor
from vlm_folders import word_tokenizer

LLAMA = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, bos_token_id=1, eos_token_id=2)


def left_padded(rng, lengths, vocab):
  ids = np.zeros((len(lengths), max(lengths)), np.int64)
  mask = np.zeros_like(ids)
  for i, n in enumerate(lengths):
    ids[i, -n:], mask[i, -n:] = rng.integers(3, vocab, n), 1
  return ids, mask


def hf_generate(hf, ids, mask, n, **kw):
  with torch.no_grad():
    return hf.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=n,
                       **kw).numpy()


def test_greedy_defaults_with_eos_list_match_transformers(tmp_path):
  """EOS ids picked from the model's own greedy output, so rows really stop early."""
  torch.manual_seed(0)
  hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA)).eval()
  ids, mask = left_padded(np.random.default_rng(0), [9, 5, 7], LLAMA["vocab_size"])
  free = hf_generate(hf, ids, mask, 12, do_sample=False, eos_token_id=None, pad_token_id=0)
  new = free[:, ids.shape[1]:]
  eos = [int(new[0, 3]), int(new[1, 6]), 95]
  hf.generation_config.eos_token_id, hf.generation_config.pad_token_id = eos, 7
  hf.save_pretrained(tmp_path)
  assert json.loads((tmp_path / "generation_config.json").read_text())["eos_token_id"] == eos

  hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
  ref = hf_generate(hf, ids, mask, 12)  # transformers with the folder's defaults
  model = load_pretrained(str(tmp_path))
  assert model.generation_config.eos_token_id == tuple(eos)
  assert model.generation_config.pad_token_id == 7
  with jax.default_matmul_precision("highest"):
    out = generate(model, ids, mask, 12)
  seq = np.asarray(out.sequences)
  assert ref.shape[1] < seq.shape[1] or (ref[:, ids.shape[1]:] == 7).any()  # someone stopped
  np.testing.assert_array_equal(seq[:, :ref.shape[1]], ref)
  assert (seq[:, ref.shape[1]:] == 7).all()
  for row, n in zip(seq[:, ids.shape[1]:], np.asarray(out.num_generated)):
    stop = [k for k, t in enumerate(row) if t in eos]
    assert n == (stop[0] + 1 if stop else 12)
  # overrides beat the defaults: no EOS at all runs the full length
  free_ours = generate(model, ids, mask, 12, eos_token_id=(), pad_token_id=0)
  np.testing.assert_array_equal(np.asarray(free_ours.sequences), free)

  save_pretrained(model, str(tmp_path / "ours"))  # written back for transformers
  back = transformers.GenerationConfig.from_pretrained(tmp_path / "ours")
  assert (back.eos_token_id, back.pad_token_id, back.bos_token_id) == (eos, 7, 1)


def test_ids_from_config_json_without_generation_config(tmp_path):
  cfg = transformers.LlamaConfig(**LLAMA, pad_token_id=0)
  transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path)
  os.remove(tmp_path / "generation_config.json")
  gc = load_pretrained(str(tmp_path)).generation_config
  want = transformers.GenerationConfig.from_model_config(cfg)
  assert (gc.eos_token_id, gc.pad_token_id, gc.bos_token_id) == (
      (want.eos_token_id,), want.pad_token_id, want.bos_token_id)
  assert gc.sampling() == dict(temperature=0.0, top_k=0, top_p=1.0)


def test_sampling_defaults_and_unsupported_options():
  d = GenerationDefaults.from_dict({"do_sample": True, "temperature": 0.7, "eos_token_id": 4})
  assert d.sampling() == dict(temperature=0.7, top_k=50, top_p=1.0)  # transformers' top_k 50
  assert d.eos_token_id == (4,) and d.pad_token_id is None
  assert GenerationDefaults.from_dict({"temperature": 0.7}).sampling()["temperature"] == 0.0
  with pytest.warns(UserWarning, match="repetition_penalty"):
    GenerationDefaults.from_dict({"repetition_penalty": 1.2})


# ----------------------------------------------------------------------------- chat templates

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
    "\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
QWEN25_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are Qwen, created by Alibaba "
    "Cloud. You are a helpful assistant.<|im_end|>\n{% endif %}{% for m in messages %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_text_chat_templates_and_answers(tmp_path):
  """LLaMA-3 and Qwen2.5 formats: the rendered prompt, and chat() equal to transformers."""
  cases = {
      "llama3": (LLAMA3_TEMPLATE, {"<|begin_of_text|>": 1, "<|end_of_text|>": 2, "<|eot_id|>": 4,
                                   "<|start_header_id|>": 5, "<|end_header_id|>": 6},
                 dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>"), [2, 4], None,
                 "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nw9 w10<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\n"),
      "qwen2.5": (QWEN25_TEMPLATE, {"<|endoftext|>": 2, "<|im_start|>": 5, "<|im_end|>": 4},
                  dict(eos_token="<|im_end|>", pad_token="<|endoftext|>"), [4, 2], 2,
                  "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                  "assistant.<|im_end|>\n<|im_start|>user\nw9 w10<|im_end|>\n"
                  "<|im_start|>assistant\n"),
  }
  for name, (template, special, tokens, eos, pad, expected) in cases.items():
    folder = tmp_path / name
    torch.manual_seed(1)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA)).eval()
    hf.generation_config.eos_token_id, hf.generation_config.pad_token_id = eos, pad
    hf.save_pretrained(folder)
    tok = word_tokenizer(special, LLAMA["vocab_size"], **tokens)
    tok.chat_template = template
    tok.save_pretrained(folder)

    proc = load_processor(str(folder))  # a text-only folder gives its tokenizer
    msgs = [{"role": "user", "content": "w9 w10"}]
    assert proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False) == expected
    with jax.default_matmul_precision("highest"):
      answer = chat(load_pretrained(str(folder)), proc, [], "w9 w10", max_new_tokens=10)
    enc = proc.apply_chat_template(msgs, add_generation_prompt=True, return_dict=True,
                                   return_tensors="pt")
    with torch.no_grad():
      ref = hf.generate(**enc, max_new_tokens=10)[0, enc["input_ids"].shape[1]:]
    assert answer == proc.decode(ref, skip_special_tokens=True).strip(), name
