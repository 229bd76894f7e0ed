"""Tiny VLMs as real-format Hugging Face folders (``llava``, ``internvl_chat``, ``qwen2_5_vl``).

A tiny folder holds what a real checkpoint holds, at a small size, so that tiny presets run the
exact code real checkpoints run (:func:`jaxvlm.models.chat.load_vlm`, the family's processor,
:func:`jaxvlm.data.vlm_inputs.encode`):

* ``config.json`` + ``model.safetensors`` (:func:`tiny_vlm_config`, random init or trained);
* a byte-level BPE tokenizer trained with ``tokenizers`` on the texts the preset uses, carrying
  the family's special tokens (:data:`FAMILY_TOKENS`) and published chat template
  (:mod:`jaxvlm.models.chat_templates`); BOS added as the family's tokenizer adds it;
* the family's processor config at a small image size (``Qwen2VLImageProcessor`` +
  ``Qwen2_5_VLProcessor``; ``CLIPImageProcessor`` + ``LlavaProcessor``; the InternVL2
  ``config.json`` tiling fields read by
  :class:`~jaxvlm.models.internvl.processor.InternVL2Processor`);
* ``generation_config.json`` with the family's stop tokens.

At ``image_size`` 32 every family gives 16 visual tokens per 32 px image (one per 8 px cell).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Iterable

from jaxvlm.data.images import IMG_CONTEXT_TOKEN, INTERNVL2_SYSTEM
from jaxvlm.errors import ConfigError
from jaxvlm.models import chat_templates

FAMILIES = ("llava", "internvl_chat", "qwen2_5_vl")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class FamilyTokens:
  """The special tokens of a family's tokenizer and how it marks BOS / EOS / pad / images."""

  special: tuple[str, ...]
  eos: str
  pad: str
  image: str
  chat_template: str
  bos: str | None = None  # added in front of every encoded text when set
  stop: tuple[str, ...] = ()  # generation_config EOS ids (besides ``eos``)
  extra: tuple[tuple[str, str], ...] = ()  # tokenizer attributes (image_token, ...)


FAMILY_TOKENS = {
    "qwen2_5_vl": FamilyTokens(
        special=("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
                 "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
                 "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
                 "<|image_pad|>", "<|video_pad|>"),
        eos="<|im_end|>", pad="<|endoftext|>", image="<|image_pad|>",
        chat_template=chat_templates.QWEN2_5_VL, stop=("<|endoftext|>",),
        extra=(("image_token", "<|image_pad|>"), ("video_token", "<|video_pad|>"),
               ("vision_bos_token", "<|vision_start|>"), ("vision_eos_token", "<|vision_end|>"))),
    "llava": FamilyTokens(
        special=("<unk>", "<s>", "</s>", "<image>", "<pad>"), eos="</s>", pad="<pad>",
        image="<image>", chat_template=chat_templates.LLAVA_1_5, bos="<s>",
        extra=(("image_token", "<image>"),)),
    "internvl_chat": FamilyTokens(  # the InternLM2 tokenizer's added tokens
        special=("<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "<|action_start|>",
                 "<|action_end|>", "<|interpreter|>", "<|plugin|>", "<img>", "</img>",
                 IMG_CONTEXT_TOKEN, "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>"),
        eos="</s>", pad="</s>", image=IMG_CONTEXT_TOKEN, chat_template=chat_templates.INTERNVL2,
        bos="<s>", stop=("<|im_end|>",)),
}


def _family_tokens(family: str) -> FamilyTokens:
  if family not in FAMILY_TOKENS:
    raise ConfigError("model.family", family, f"one of {FAMILIES}")
  return FAMILY_TOKENS[family]


def train_tokenizer(family: str, texts: Iterable[str], vocab_size: int = 512):
  """Byte-level BPE (``tokenizers``) trained on ``texts`` plus the template's own words, with
  ``family``'s special tokens first (ids 0..k-1), as a ``PreTrainedTokenizerFast``."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
  from transformers import PreTrainedTokenizerFast
  spec = _family_tokens(family)
  tk = Tokenizer(models.BPE())
  tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tk.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(spec.special),
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  # the templates' fixed text, frequent enough for BPE to merge it into few tokens
  template_text = ["USER: ", " ASSISTANT:", "system\n", "user\n", "assistant\n",
                   "You are a helpful assistant.", INTERNVL2_SYSTEM] * 64
  tk.train_from_iterator([*template_text, *texts], trainer=trainer)
  if spec.bos is not None:
    tk.post_processor = processors.TemplateProcessing(
        single=f"{spec.bos} $A", pair=f"{spec.bos} $A {spec.bos} $B",
        special_tokens=[(spec.bos, tk.token_to_id(spec.bos))])
  else:
    tk.post_processor = processors.ByteLevel(trim_offsets=False)
  return PreTrainedTokenizerFast(
      tokenizer_object=tk, eos_token=spec.eos, pad_token=spec.pad, bos_token=spec.bos,
      unk_token="<unk>" if "<unk>" in spec.special else None, padding_side="left",
      chat_template=spec.chat_template, extra_special_tokens=dict(spec.extra))


def _text_config(tokenizer, **extra) -> dict:
  ids = lambda t: tokenizer.convert_tokens_to_ids(t) if t else None
  return dict(vocab_size=len(tokenizer), hidden_size=96, intermediate_size=256,
              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=2048, rms_norm_eps=1e-6, rope_theta=10000.0,
              tie_word_embeddings=False, bos_token_id=ids(tokenizer.bos_token),
              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **extra)


def tiny_vlm_config(family: str, tokenizer, image_size: int = 32, **overrides) -> dict:
  """HF ``config.json`` dict of a tiny ``family`` VLM over ``tokenizer``'s vocabulary.
  ``overrides`` replace top-level keys; a dict value for a sub-config (``text_config``,
  ``llm_config``, ``vision_config``) is merged into it."""
  ids = tokenizer.convert_tokens_to_ids
  image = ids(_family_tokens(family).image)
  vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                image_size=image_size)
  if family == "llava":
    cfg = dict(model_type="llava", architectures=["LlavaForConditionalGeneration"],
               vision_config=dict(vision, model_type="clip_vision_model", patch_size=8,
                                  hidden_act="quick_gelu"),
               text_config=dict(_text_config(tokenizer), model_type="llama"),
               image_token_index=image, vision_feature_layer=0,
               vision_feature_select_strategy="default", projector_hidden_act="gelu",
               tie_word_embeddings=False)
  elif family == "internvl_chat":
    cfg = dict(model_type="internvl_chat", architectures=["InternVLChatModel"],
               vision_config=dict(vision, patch_size=4, qkv_bias=True, qk_normalization=False,
                                  norm_type="layer_norm", layer_norm_eps=1e-6, hidden_act="gelu",
                                  num_channels=3),
               llm_config=dict(_text_config(tokenizer), model_type="qwen2",
                               architectures=["Qwen2ForCausalLM"]),
               select_layer=-1, downsample_ratio=0.5, ps_version="v2", template="internlm2-chat",
               force_image_size=image_size, max_dynamic_patch=6, min_dynamic_patch=1,
               use_thumbnail=True, dynamic_image_size=True, img_context_token_id=image)
  elif family == "qwen2_5_vl":
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 4, 4]}
    cfg = dict(model_type="qwen2_5_vl", architectures=["Qwen2_5_VLForConditionalGeneration"],
               text_config=dict(_text_config(tokenizer), rope_parameters=rope),
               vision_config=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4,
                                  out_hidden_size=96, patch_size=4, temporal_patch_size=2,
                                  spatial_merge_size=2, window_size=16, fullatt_block_indexes=[1],
                                  in_channels=3, hidden_act="silu"),
               image_token_id=image, video_token_id=ids("<|video_pad|>"),
               vision_start_token_id=ids("<|vision_start|>"),
               vision_end_token_id=ids("<|vision_end|>"), tie_word_embeddings=False)
  else:
    raise ConfigError("model.family", family, f"one of {FAMILIES}")
  for key, value in overrides.items():
    cfg[key] = ({**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict)
                else value)
  return cfg


def save_processor(family: str, folder: str, tokenizer, image_size: int = 32) -> None:
  """Writes ``tokenizer`` and the family's processor files (image side ``image_size``)."""
  import transformers

  from jaxvlm.models.chat import without_video
  tokenizer.save_pretrained(folder)
  if family == "internvl_chat":  # the tiling settings live in config.json
    return
  if family == "qwen2_5_vl":
    pixels = image_size * image_size
    image_processor = transformers.Qwen2VLImageProcessor(
        min_pixels=pixels // 4, max_pixels=pixels * 4, patch_size=4, merge_size=2,
        temporal_patch_size=2, image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    processor = without_video(transformers.Qwen2_5_VLProcessor)(
        image_processor=image_processor, tokenizer=tokenizer,
        chat_template=FAMILY_TOKENS[family].chat_template)
  elif family == "llava":
    image_processor = transformers.CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    processor = without_video(transformers.LlavaProcessor)(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=FAMILY_TOKENS[family].chat_template)
  else:
    raise ConfigError("model.family", family, f"one of {FAMILIES}")
  processor.save_pretrained(folder)


def write_generation_config(folder: str, tokenizer, family: str) -> None:
  """``generation_config.json``: greedy, the family's stop tokens, the tokenizer's pad."""
  spec = _family_tokens(family)
  stop = [tokenizer.convert_tokens_to_ids(t) for t in (spec.eos, *spec.stop)]
  with open(os.path.join(folder, "generation_config.json"), "w") as f:
    json.dump({"eos_token_id": stop, "pad_token_id": tokenizer.pad_token_id,
               "bos_token_id": tokenizer.bos_token_id, "do_sample": False}, f, indent=2)


def write_tiny_vlm_folder(family: str, folder: str, texts: Iterable[str], *, seed: int = 0,
                          image_size: int = 32, vocab_size: int = 512, dtype: str = "float32",
                          **overrides) -> str:
  """A random-init tiny ``family`` VLM saved as a real-format folder (module docstring);
  ``texts`` train its tokenizer; ``overrides`` go to :func:`tiny_vlm_config`. Returns
  ``folder``."""
  from jaxvlm import models
  tokenizer = train_tokenizer(family, texts, vocab_size)
  hf = tiny_vlm_config(family, tokenizer, image_size, **overrides)
  model = models.from_config(hf, seed=seed, dtype=dtype, param_dtype=dtype)
  os.makedirs(folder, exist_ok=True)
  models.save_pretrained(model, folder, source_config=hf)
  save_processor(family, folder, tokenizer, image_size)
  write_generation_config(folder, tokenizer, family)
  return folder


__all__ = ["FAMILIES", "FAMILY_TOKENS", "save_processor", "tiny_vlm_config", "train_tokenizer",
           "write_generation_config", "write_tiny_vlm_folder"]
