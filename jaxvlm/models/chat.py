"""End-to-end chat with an LLM (tokenizer) or a VLM (processor) from a local Hugging Face folder.

The prompt is the checkpoint's own chat template (``apply_chat_template``: LLaMA-3, Qwen2.5 /
ChatML, Qwen2.5-VL, InternVL2, LLaVA ... whatever the folder ships); the image placeholders are
expanded by the real processor; generation uses the checkpoint's defaults
(``model.generation_config``: EOS ids, pad, sampling), as ``transformers`` does.
"""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Sequence

from flax import nnx

from jaxvlm.errors import MissingFileError
from jaxvlm.generation import generate
from jaxvlm.generation.defaults import model_defaults
from jaxvlm.models.tokenizer import load_tokenizer

# Processor outputs the models derive from ``input_ids`` themselves.
_TEXT_MARKERS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")


def load_processor(path: str):
  """The folder's processor (``AutoProcessor``), its tokenizer padding on the left.

  A folder without an image processor gives the tokenizer. Without ``torchvision`` (which
  ``transformers`` needs for video processors only) the processor is built from the folder's
  tokenizer, slow image processor and ``processor_config.json``, without a video processor.
  """
  if not any(os.path.exists(os.path.join(path, f))
             for f in ("preprocessor_config.json", "processor_config.json")):
    return load_tokenizer(path)
  import transformers
  if importlib.util.find_spec("torchvision") is not None:
    processor = transformers.AutoProcessor.from_pretrained(path, local_files_only=True)
  else:
    processor = _processor_without_video(path)
  processor.tokenizer.padding_side = "left"
  return processor


def _processor_without_video(path: str):
  import transformers
  settings = {}
  for name in ("processor_config.json", "preprocessor_config.json"):
    file = os.path.join(path, name)
    if os.path.exists(file):
      with open(file) as f:
        settings = {**json.load(f), **settings}
  cls_name = settings.pop("processor_class", None)
  if cls_name is None or not hasattr(transformers, cls_name):
    raise MissingFileError(os.path.join(path, "processor_config.json"),
                           f"processor config naming a transformers processor_class (got {cls_name!r})")
  base = getattr(transformers, cls_name)
  cls = without_video(base)
  kwargs = {k: v for k, v in settings.items()
            if k in base.__init__.__code__.co_varnames and k not in cls.get_attributes()}
  template = os.path.join(path, "chat_template.jinja")
  if os.path.exists(template):
    with open(template) as f:
      kwargs["chat_template"] = f.read()
  image_processor = transformers.AutoImageProcessor.from_pretrained(path, use_fast=False,
                                                                    local_files_only=True)
  return cls(image_processor=image_processor, tokenizer=load_tokenizer(path), **kwargs)


def without_video(processor_cls: type) -> type:
  """``processor_cls`` made to take no video processor (a subclass of the same name)."""
  attrs = [a for a in processor_cls.get_attributes() if a != "video_processor"]
  return type(processor_cls.__name__, (processor_cls,),
              {"get_attributes": classmethod(lambda c: attrs)})


def chat(model: nnx.Module, processor, images: Sequence, text: str,
         max_new_tokens: int | None = None, **generate_kwargs) -> str:
  """The model's answer to one user turn (``images`` then ``text``).

  ``processor`` is a VLM processor or, for a text-only model, a tokenizer (see
  :func:`load_processor`). The prompt is its chat template with the assistant turn opened; the
  processor's image tensors go to ``generate``. EOS and pad come from ``model.generation_config``,
  else from the tokenizer; the answer is decoded without special tokens.
  """
  images = list(images or [])
  tok = getattr(processor, "tokenizer", processor)
  if hasattr(processor, "image_processor"):
    content = [{"type": "image"} for _ in images] + [{"type": "text", "text": text}]
  else:
    if images:
      raise TypeError("chat: images need a VLM processor, got a tokenizer")
    content = text
  prompt = processor.apply_chat_template([{"role": "user", "content": content}],
                                         add_generation_prompt=True, tokenize=False)
  kwargs = dict(text=[prompt], return_tensors="np", add_special_tokens=False)
  enc = processor(images=images or None, **kwargs) if images else processor(**kwargs)
  ids, mask = enc["input_ids"], enc["attention_mask"]
  visual = {k: v for k, v in enc.items() if k not in _TEXT_MARKERS}
  defaults = model_defaults(model)
  if not defaults.eos_token_id and tok.eos_token_id is not None:
    generate_kwargs.setdefault("eos_token_id", tok.eos_token_id)
  if defaults.pad_token_id is None and tok.pad_token_id is not None:
    generate_kwargs.setdefault("pad_token_id", tok.pad_token_id)
  out = generate(model, ids, mask, max_new_tokens, **generate_kwargs, **visual)
  new = out.new_tokens[0, :int(out.num_generated[0])]
  return tok.decode(list(map(int, new)), skip_special_tokens=True).strip()
