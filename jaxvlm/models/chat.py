"""End-to-end chat with an LLM (tokenizer) or a VLM (processor) from a local Hugging Face folder.

The prompt is the checkpoint's own chat template (``apply_chat_template``: LLaMA-3, Qwen2.5 /
ChatML, Qwen2.5-VL, InternVL2, LLaVA ... whatever the folder ships); the image placeholders are
expanded by the real processor; generation uses the checkpoint's defaults
(``model.generation_config``: EOS ids, pad, sampling), as ``transformers`` does.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np
from flax import nnx

from jaxvlm.errors import MissingFileError
from jaxvlm.generation import generate
from jaxvlm.generation.defaults import model_defaults
from jaxvlm.models.paths import resolve_model_path
from jaxvlm.models.tokenizer import load_tokenizer


def load_processor(path: str, trust_remote_code: bool = False, what: str = "model.path"):
  """The folder's processor, its tokenizer padding on the left.

  ``qwen2_5_vl`` / ``llava`` / ``internvl`` folders give their ``transformers`` processor class
  (``processor_config.json``), built from the folder's tokenizer and slow image processor without
  a video processor (images only; the same with or without ``torchvision``, and for folders that
  ship no video processor config); InternVL2 remote-code folders (``internvl_chat``) give
  :class:`~jaxvlm.models.internvl.processor.InternVL2Processor`; a folder without an image
  processor gives the tokenizer. A folder whose tokenizer has no chat
  template raises :class:`MissingFileError` naming the file it needs. ``path`` is a local
  folder or a hub id (:func:`jaxvlm.models.paths.resolve_model_path`; ``what`` names the setting
  in its errors).
  """
  path = resolve_model_path(path, what)
  config = os.path.join(path, "config.json")
  model_type = None
  if os.path.exists(config):
    with open(config) as f:
      model_type = json.load(f).get("model_type")
  if model_type == "internvl_chat":
    from jaxvlm.models.internvl.processor import InternVL2Processor
    processor = InternVL2Processor.from_pretrained(
        path, load_tokenizer(path, trust_remote_code=trust_remote_code))
  elif not any(os.path.exists(os.path.join(path, f))
               for f in ("preprocessor_config.json", "processor_config.json")):
    processor = load_tokenizer(path, trust_remote_code=trust_remote_code)
  else:
    processor = _processor_without_video(path)
  tok = getattr(processor, "tokenizer", processor)
  tok.padding_side = "left"
  if model_type != "internvl_chat" and not (getattr(processor, "chat_template", None)
                                            or tok.chat_template):
    raise MissingFileError(os.path.join(path, "chat_template.jinja"),
                           f"chat template of {path} (or 'chat_template' in tokenizer_config.json)")
  return processor


def load_vlm(path: str, trust_remote_code: bool = False, what: str = "model.path",
             **load_kwargs):
  """(model, processor) of a checkpoint folder: :func:`load_processor` and
  :func:`jaxvlm.models.load_pretrained` (an ``internvl_chat`` config names no image token: the
  processor's ``<IMG_CONTEXT>`` id is passed)."""
  from jaxvlm.models import load_pretrained
  path = resolve_model_path(path, what)
  processor = load_processor(path, trust_remote_code=trust_remote_code, what=what)
  if type(processor).__name__ == "InternVL2Processor":
    load_kwargs.setdefault("image_token_id", processor.image_token_id)
  return load_pretrained(path, **load_kwargs), processor


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


def chat_batch(model: nnx.Module, processor, conversations: Sequence[Sequence[dict]],
               max_new_tokens: int | None = None, return_tokens: bool = False,
               pad_to_multiple: int = 1, **generate_kwargs) -> list[str] | list[list[int]]:
  """Greedy (or the checkpoint's) answers to a batch of chat ``conversations`` (HF messages,
  :func:`jaxvlm.data.vlm_inputs.encode`), one left-padded batch through the one ``generate``.

  EOS and pad come from ``model.generation_config``, else from the tokenizer; each row's tokens
  equal ``transformers``' ``generate`` for that row alone. Returns the answers decoded without
  special tokens, or with ``return_tokens`` the generated ids up to and including EOS.
  ``pad_to_multiple`` rounds the prompt length up (fewer compilations over many batches).
  """
  from jaxvlm.data import vlm_inputs
  tok = getattr(processor, "tokenizer", processor)
  batch = vlm_inputs.encode(processor, conversations, pad_to_multiple=pad_to_multiple)
  defaults = model_defaults(model)
  if not defaults.eos_token_id and tok.eos_token_id is not None:
    generate_kwargs.setdefault("eos_token_id", tok.eos_token_id)
  if defaults.pad_token_id is None and tok.pad_token_id is not None:
    generate_kwargs.setdefault("pad_token_id", tok.pad_token_id)
  out = generate(model, batch["input_ids"], batch["attention_mask"], max_new_tokens,
                 **generate_kwargs, **vlm_inputs.generation_kwargs(model, batch))
  new, counts = np.asarray(out.new_tokens), np.asarray(out.num_generated)
  tokens = [list(map(int, row[:n])) for row, n in zip(new, counts)]
  if return_tokens:
    return tokens
  return [tok.decode(t, skip_special_tokens=True).strip() for t in tokens]


def user_turn(images: Sequence, text: str) -> list[dict]:
  """A one-turn conversation: ``images`` (in order) then ``text``."""
  return [{"role": "user", "content": [{"type": "image", "image": im} for im in images]
           + [{"type": "text", "text": text}]}]


def chat(model: nnx.Module, processor, images: Sequence, text: str,
         max_new_tokens: int | None = None, **generate_kwargs) -> str:
  """The model's answer to one user turn (``images`` then ``text``): :func:`chat_batch`'s
  one-row case. ``processor`` is a VLM processor or, for a text-only model, a tokenizer."""
  images = list(images or [])
  if images and not hasattr(processor, "image_processor"):
    raise TypeError("chat: images need a VLM processor, got a tokenizer")
  conversation = (user_turn(images, text) if hasattr(processor, "image_processor")
                  else [{"role": "user", "content": text}])
  return chat_batch(model, processor, [conversation], max_new_tokens, **generate_kwargs)[0]
