"""Checkpoint generation defaults (EOS list, pad, sampling) and chat templates through real processors."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers

from jaxvlm.generation import generate
from jaxvlm.generation.defaults import GenerationDefaults
from jaxvlm.models import chat, load_pretrained, save_pretrained
from jaxvlm.models.chat import load_processor, without_video

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
# content lists: {"type": "image"} items become the format's placeholder
_PARTS = ("{% for c in m['content'] %}{% if c['type'] == 'image' %}IMAGE{% else %}"
          "{{ c['text'] }}{% endif %}{% endfor %}")
QWEN25_VL_TEMPLATE = (
    "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ m['role'] }}\n"
    + _PARTS.replace("IMAGE", "<|vision_start|><|image_pad|><|vision_end|>")
    + "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
INTERNVL2_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n" + _PARTS.replace("IMAGE", "<IMG_CONTEXT>\n")
    + "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
LLAVA_TEMPLATE = (
    "{% for m in messages %}{{ m['role'].upper() }}: " + _PARTS.replace("IMAGE", "<image>\n")
    + " {% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")


def word_tokenizer(special: dict[str, int], size: int, **tokens):
  """Word-level fast tokenizer: ``special`` tokens at fixed ids, ``w<i>`` words elsewhere."""
  by_id = {i: t for t, i in special.items()}
  vocab = {by_id.get(i, f"w{i}"): i for i in range(size)}
  tk = Tokenizer(models.WordLevel(vocab, unk_token=tokens.get("unk_token", "w3")))
  tk.pre_tokenizer = pre_tokenizers.Whitespace()
  return transformers.PreTrainedTokenizerFast(tokenizer_object=tk, additional_special_tokens=[
      t for t in special if t not in tokens.values()], **tokens)


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


def _qwen25_vl(folder):
  img, start, end = 100, 102, 103
  torch.manual_seed(2)
  cfg = transformers.Qwen2_5_VLConfig(
      text_config=dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, bos_token_id=1,
                       eos_token_id=4, rope_parameters={"rope_type": "default",
                                                        "rope_theta": 10000.0,
                                                        "mrope_section": [2, 3, 3]}),
      vision_config=dict(depth=2, hidden_size=32, intermediate_size=48, num_heads=2,
                         out_hidden_size=64, fullatt_block_indexes=[1], window_size=56),
      image_token_id=img, video_token_id=101, vision_start_token_id=start,
      vision_end_token_id=end)
  hf = transformers.Qwen2_5_VLForConditionalGeneration(cfg).eval()
  tok = word_tokenizer({"<|endoftext|>": 2, "<|im_end|>": 4, "<|im_start|>": 5,
                        "<|image_pad|>": img, "<|video_pad|>": 101, "<|vision_start|>": start,
                        "<|vision_end|>": end}, 128, eos_token="<|im_end|>",
                       pad_token="<|endoftext|>")
  ip = transformers.Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112)
  return hf, transformers.Qwen2_5_VLProcessor, dict(image_processor=ip, tokenizer=tok,
                                                    chat_template=QWEN25_VL_TEMPLATE), [4, 2]


def _llava(folder):
  torch.manual_seed(3)
  cfg = transformers.LlavaConfig(
      vision_config=dict(model_type="clip_vision_model", hidden_size=32, num_attention_heads=2,
                         intermediate_size=64, num_hidden_layers=2, image_size=42,
                         patch_size=14),
      text_config=dict(model_type="llama", hidden_size=48, num_attention_heads=4,
                       num_key_value_heads=2, intermediate_size=96, num_hidden_layers=2,
                       vocab_size=128),
      image_token_index=120, image_seq_length=9)
  hf = transformers.LlavaForConditionalGeneration(cfg).eval()
  tok = word_tokenizer({"<s>": 1, "</s>": 2, "<image>": 120}, 128, bos_token="<s>",
                       eos_token="</s>")
  ip = transformers.CLIPImageProcessor(size={"shortest_edge": 42}, crop_size=42)
  return hf, transformers.LlavaProcessor, dict(
      image_processor=ip, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
      num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE), [2]


def _internvl(folder):
  torch.manual_seed(4)
  cfg = transformers.InternVLConfig(
      vision_config=dict(hidden_size=32, num_attention_heads=2, intermediate_size=64,
                         num_hidden_layers=2, image_size=56, patch_size=14),
      text_config=dict(model_type="qwen2", hidden_size=48, num_attention_heads=4,
                       num_key_value_heads=2, intermediate_size=96, num_hidden_layers=2,
                       vocab_size=128),
      image_token_id=120, image_seq_length=4)
  hf = transformers.InternVLForConditionalGeneration(cfg).eval()
  tok = word_tokenizer({"<|endoftext|>": 2, "<|im_end|>": 4, "<|im_start|>": 5, "<img>": 118,
                        "</img>": 119, "<IMG_CONTEXT>": 120, "<video>": 121}, 128,
                       eos_token="<|im_end|>", pad_token="<|endoftext|>",
                       extra_special_tokens={"start_image_token": "<img>",
                                             "end_image_token": "</img>",
                                             "context_image_token": "<IMG_CONTEXT>",
                                             "video_token": "<video>"})
  ip = transformers.GotOcr2ImageProcessor(size={"height": 56, "width": 56}, crop_to_patches=True,
                                          max_patches=2)
  return hf, transformers.InternVLProcessor, dict(image_processor=ip, tokenizer=tok,
                                                  image_seq_length=4,
                                                  chat_template=INTERNVL2_TEMPLATE), [4, 2]


@pytest.mark.parametrize("build", [_qwen25_vl, _llava, _internvl],
                         ids=["qwen2.5-vl", "llava", "internvl2"])
def test_vlm_chat_with_real_processor_from_folder(build, tmp_path):
  """The real processor class (slow image processor, no torchvision) from a folder; chat() gives
  transformers' answer for the same processor output, with the folder's generation defaults."""
  hf, proc_cls, parts, eos = build(tmp_path)
  hf.generation_config.eos_token_id = eos
  hf.save_pretrained(tmp_path)
  without_video(proc_cls)(**parts).save_pretrained(tmp_path)  # the video processor needs torchvision
  proc = load_processor(str(tmp_path))
  assert isinstance(proc, proc_cls)

  image = np.random.default_rng(0).integers(0, 256, (70, 98, 3), np.uint8)
  msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "w9 w10"}]}]
  prompt = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
  enc = proc(images=[image], text=[prompt], return_tensors="pt", add_special_tokens=False)
  n_img = int((enc["input_ids"] == hf.config.image_token_id).sum())
  assert n_img > 0
  with torch.no_grad():
    ref = hf.generate(**enc, max_new_tokens=8)[0, enc["input_ids"].shape[1]:]
  with jax.default_matmul_precision("highest"):
    answer = chat(load_pretrained(str(tmp_path)), proc, [image], "w9 w10", max_new_tokens=8)
  expected = proc.tokenizer.decode(ref, skip_special_tokens=True).strip()
  assert answer == expected and answer
