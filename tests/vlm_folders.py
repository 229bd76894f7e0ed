"""Tiny random ``transformers`` VLMs saved as real-format folders (config, weights, tokenizer,
processor with its chat template), for tests that compare the shared input path with HF.

Each builder writes into ``folder`` and returns the HF model (eval mode, greedy defaults with the
family's stop tokens):
* :func:`qwen2_5_vl` — the real Qwen2.5 vocabulary (``tests/real_tokenizers.py``),
  ``Qwen2VLImageProcessor`` (56..112 px), the Qwen2.5-VL template;
* :func:`llava` — a tiny BPE tokenizer with LLaVA's special tokens
  (:func:`jaxvlm.models.tiny.train_tokenizer`), CLIP 42 px processor, the LLaVA-1.5 template;
* :func:`internvl` — HF-native InternVL, a word-level tokenizer with InternVL's image tokens,
  ``GotOcr2ImageProcessor`` cropping up to 2 tiles of 56 px.
"""

from __future__ import annotations

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers

from jaxvlm.models import chat_templates, tiny
from jaxvlm.models.chat import without_video
from real_tokenizers import qwen2_5_tokenizer

INTERNVL_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<IMG_CONTEXT>\n{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% endif %}")


def word_tokenizer(special: dict[str, int], size: int, **tokens):
  """Word-level fast tokenizer: ``special`` tokens at fixed ids, ``w<i>`` words elsewhere."""
  by_id = {i: t for t, i in special.items()}
  vocab = {by_id.get(i, f"w{i}"): i for i in range(size)}
  tk = Tokenizer(models.WordLevel(vocab, unk_token=tokens.get("unk_token", "w3")))
  tk.pre_tokenizer = pre_tokenizers.Whitespace()
  return transformers.PreTrainedTokenizerFast(tokenizer_object=tk, additional_special_tokens=[
      t for t in special if t not in tokens.values()], **tokens)


def _save(hf, processor, folder, eos) -> transformers.PreTrainedModel:
  hf.generation_config.eos_token_id = eos
  hf.generation_config.pad_token_id = processor.tokenizer.pad_token_id
  hf.save_pretrained(folder)
  processor.save_pretrained(folder)
  return hf.eval()


def qwen2_5_vl(folder, seed: int = 2):
  tok = qwen2_5_tokenizer()
  ids = tok.convert_tokens_to_ids
  torch.manual_seed(seed)
  cfg = transformers.Qwen2_5_VLConfig(
      text_config=dict(vocab_size=151936, hidden_size=64, intermediate_size=96,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"),
                       rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                        "mrope_section": [2, 3, 3]}),
      vision_config=dict(depth=2, hidden_size=32, intermediate_size=48, num_heads=2,
                         out_hidden_size=64, fullatt_block_indexes=[1], window_size=56),
      image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
      vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
  processor = without_video(transformers.Qwen2_5_VLProcessor)(
      image_processor=transformers.Qwen2VLImageProcessor(min_pixels=56 * 56,
                                                         max_pixels=112 * 112),
      tokenizer=tok, chat_template=chat_templates.QWEN2_5_VL)
  return _save(transformers.Qwen2_5_VLForConditionalGeneration(cfg), processor, folder,
               [ids("<|im_end|>"), ids("<|endoftext|>")])


def llava(folder, seed: int = 3):
  tok = tiny.train_tokenizer("llava", ["what color is the square?", "red", "two objects"])
  torch.manual_seed(seed)
  cfg = transformers.LlavaConfig(
      vision_config=dict(model_type="clip_vision_model", hidden_size=32, num_attention_heads=2,
                         intermediate_size=64, num_hidden_layers=2, image_size=42,
                         patch_size=14),
      text_config=dict(model_type="llama", hidden_size=48, num_attention_heads=4,
                       num_key_value_heads=2, intermediate_size=96, num_hidden_layers=2,
                       vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
      image_token_index=tok.convert_tokens_to_ids("<image>"), image_seq_length=9)
  processor = without_video(transformers.LlavaProcessor)(
      image_processor=transformers.CLIPImageProcessor(size={"shortest_edge": 42},
                                                      crop_size=42),
      tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
      num_additional_image_tokens=1, chat_template=chat_templates.LLAVA_1_5)
  return _save(transformers.LlavaForConditionalGeneration(cfg), processor, folder,
               [tok.eos_token_id])


def internvl(folder, seed: int = 4):
  torch.manual_seed(seed)
  cfg = transformers.InternVLConfig(
      vision_config=dict(hidden_size=32, num_attention_heads=2, intermediate_size=64,
                         num_hidden_layers=2, image_size=56, patch_size=14),
      text_config=dict(model_type="qwen2", hidden_size=48, num_attention_heads=4,
                       num_key_value_heads=2, intermediate_size=96, num_hidden_layers=2,
                       vocab_size=128),
      image_token_id=120, image_seq_length=4)
  tok = word_tokenizer({"<|endoftext|>": 2, "<|im_end|>": 4, "<|im_start|>": 5, "<img>": 118,
                        "</img>": 119, "<IMG_CONTEXT>": 120, "<video>": 121}, 128,
                       eos_token="<|im_end|>", pad_token="<|endoftext|>",
                       extra_special_tokens={"start_image_token": "<img>",
                                             "end_image_token": "</img>",
                                             "context_image_token": "<IMG_CONTEXT>",
                                             "video_token": "<video>"})
  processor = without_video(transformers.InternVLProcessor)(
      image_processor=transformers.GotOcr2ImageProcessor(
          size={"height": 56, "width": 56}, crop_to_patches=True, max_patches=2),
      tokenizer=tok, image_seq_length=4, chat_template=INTERNVL_TEMPLATE)
  return _save(transformers.InternVLForConditionalGeneration(cfg), processor, folder, [4, 2])


BUILDERS = {"qwen2_5_vl": qwen2_5_vl, "llava": llava, "internvl": internvl}
