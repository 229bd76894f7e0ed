"""The processor of InternVL2 remote-code folders (``internvl_chat``), which ``transformers`` lacks.

It has the call interface of the ``transformers`` VLM processors (``apply_chat_template``,
``__call__(text=, images=)``, ``tokenizer``, ``image_processor``, ``image_token``) and does what
the remote code's ``load_image`` / ``dynamic_preprocess`` + ``InternVLChatModel.chat`` do:

* each image is cut into an aspect-ratio grid of ``max_num`` tiles at most, row-major, plus a
  thumbnail when there are several (:func:`jaxvlm.data.images.dynamic_tiles`), each tile resized
  to ``image_size`` and ImageNet-normalised;
* the ``<image>`` placeholders of the text, in order, become ``<img>`` + ``<IMG_CONTEXT>`` x
  (tiles x tokens per tile) + ``</img>``;
* the prompt is the folder's conversation template (``config.json`` ``template``:
  ``internlm2-chat`` or ``Hermes-2``, :data:`jaxvlm.models.chat_templates.INTERNVL2`);
* BOS is whatever the folder's tokenizer adds (InternLM2 adds ``<s>``, as ``chat`` tokenizes).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

import numpy as np

from jaxvlm.data import images as image_lib
from jaxvlm.errors import ConfigError, MissingFileError, ShapeError
from jaxvlm.models import chat_templates

IMAGE_PLACEHOLDER = "<image>"


@dataclasses.dataclass
class InternVL2ImageProcessor:
  """Dynamic tiling + normalisation of InternVL2 (``load_image(image, max_num=...)``)."""

  image_size: int = 448
  max_num: int = 12
  min_num: int = 1
  use_thumbnail: bool = True

  def __post_init__(self):
    if self.max_num < 1 or self.min_num < 1 or self.min_num > self.max_num:
      raise ConfigError("max_num", (self.min_num, self.max_num),
                        "1 <= min_num <= max_num tiles per image")

  def num_tiles(self, image, max_num: int | None = None) -> int:
    """Tiles of one image (a path, PIL image or ``[H, W, 3]`` array): its size picks the grid, as
    ``dynamic_preprocess``; the thumbnail counts when there are several tiles."""
    if isinstance(image, np.ndarray):
      height, width = image.shape[:2]
    else:
      width, height = image_lib.load_image(image).size
    cols, rows = image_lib.tile_grid(width, height, min_num=self.min_num,
                                     max_num=self._max_num(max_num), image_size=self.image_size)
    return cols * rows + int(self.use_thumbnail and cols * rows > 1)

  def _max_num(self, max_num: int | None) -> int:
    max_num = self.max_num if max_num is None else max_num
    if max_num < 1:
      raise ConfigError("max_num", max_num, "an int >= 1 (tiles per image)")
    return max_num

  def __call__(self, images: Sequence, max_num: int | None = None,
               pixels: bool = True) -> dict[str, np.ndarray]:
    """``pixel_values [tiles, 3, S, S]`` of all images in order and ``num_patches`` per image
    (``pixels=False``: ``num_patches`` alone, from the images' sizes)."""
    max_num = self._max_num(max_num)
    if not pixels:
      return {"num_patches": np.asarray([self.num_tiles(im, max_num) for im in images], np.int64)}
    tiles = [image_lib.dynamic_tiles(image_lib.load_image(im), min_num=self.min_num,
                                     max_num=max_num, image_size=self.image_size,
                                     use_thumbnail=self.use_thumbnail) for im in images]
    if not tiles:
      return {"pixel_values": np.zeros((0, 3, self.image_size, self.image_size), np.float32),
              "num_patches": np.zeros((0,), np.int64)}
    return {"pixel_values": np.concatenate([image_lib.normalize(t, self.image_size)
                                            for t in tiles]),
            "num_patches": np.asarray([len(t) for t in tiles], np.int64)}


class InternVL2Processor:
  """Processor of an ``internvl_chat`` folder (module docstring); ``tokens_per_tile`` visual
  tokens per tile: ``(image_size / patch_size)^2 * downsample_ratio^2`` (256 for InternVL2)."""

  image_token = image_lib.IMG_CONTEXT_TOKEN
  image_placeholder = IMAGE_PLACEHOLDER

  def __init__(self, image_processor: InternVL2ImageProcessor, tokenizer, tokens_per_tile: int,
               chat_template: str = chat_templates.INTERNVL2):
    self.image_processor, self.tokenizer = image_processor, tokenizer
    self.tokens_per_tile, self.chat_template = tokens_per_tile, chat_template
    self.image_token_id = image_lib.image_token_id(tokenizer)

  @classmethod
  def from_pretrained(cls, path: str, tokenizer) -> "InternVL2Processor":
    """From the folder's ``config.json`` (``force_image_size`` / ``vision_config``,
    ``downsample_ratio``, ``max_dynamic_patch``, ``min_dynamic_patch``, ``use_thumbnail``,
    ``template``) and its tokenizer."""
    file = os.path.join(path, "config.json")
    if not os.path.exists(file):
      raise MissingFileError(file, "InternVL2 config")
    with open(file) as f:
      hf = json.load(f)
    template = hf.get("template")
    if template not in chat_templates.INTERNVL2_TEMPLATE_NAMES:
      raise ConfigError(f"{file}: template", template,
                        f"one of {chat_templates.INTERNVL2_TEMPLATE_NAMES}")
    vision = hf.get("vision_config", {})
    size = hf.get("force_image_size") or vision.get("image_size", 448)
    tokens = int((size // vision.get("patch_size", 14)) ** 2 * hf.get("downsample_ratio", 0.5) ** 2)
    image_processor = InternVL2ImageProcessor(
        image_size=size, max_num=hf.get("max_dynamic_patch", 12),
        min_num=hf.get("min_dynamic_patch", 1), use_thumbnail=hf.get("use_thumbnail", True))
    return cls(image_processor, tokenizer, tokens)

  def apply_chat_template(self, messages, add_generation_prompt: bool = False,
                          tokenize: bool = False, **kwargs):
    """The conversation template rendered (``<image>\\n`` per image item, before its text)."""
    return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template,
                                              add_generation_prompt=add_generation_prompt,
                                              tokenize=tokenize, **kwargs)

  def image_text(self, num_tiles: int) -> str:
    """The text that stands for one image of ``num_tiles`` tiles."""
    return image_lib.internvl2_image_prompt(num_tiles, self.tokens_per_tile)

  def __call__(self, text=None, images=None, *, return_tensors: str = "np",
               max_num: int | None = None, pixels: bool = True,
               **tokenizer_kwargs) -> dict[str, np.ndarray]:
    """Tokenized ``text`` (str or list) with its ``<image>`` placeholders expanded, in order,
    for ``images``; ``pixel_values [tiles, 3, S, S]`` (not with ``pixels=False``) and
    ``num_patches [images]``."""
    texts = [text] if isinstance(text, str) else list(text or [])
    images = list(images or [])
    slots = sum(t.count(IMAGE_PLACEHOLDER) for t in texts)
    if slots != len(images):
      raise ShapeError("images", len(images), f"{slots} (the {IMAGE_PLACEHOLDER} placeholders "
                       "of the text)")
    visual = self.image_processor(images, max_num=max_num, pixels=pixels)
    counts = iter(visual["num_patches"].tolist())
    expanded = []
    for t in texts:
      parts = t.split(IMAGE_PLACEHOLDER)
      expanded.append(parts[0] + "".join(self.image_text(next(counts)) + p for p in parts[1:]))
    out = dict(self.tokenizer(expanded, return_tensors=return_tensors, padding=len(texts) > 1,
                              **tokenizer_kwargs)) if texts else {}
    return out | visual if images else out
