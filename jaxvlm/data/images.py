"""Image loading and the VLM preprocessing that HF processors do not cover.

* :func:`load_image`: path / PIL image -> RGB PIL image.
* :func:`hf_image_processor`: the ``AutoImageProcessor`` of a local checkpoint folder (CLIP,
  GotOcr2/InternVL, Qwen2-VL processors), or None when the folder has none.
* InternVL2 dynamic tiling (the official ``dynamic_preprocess``): the image is resized to the
  ``cols x rows`` grid of ``image_size`` tiles whose aspect ratio is closest to the image's (at most
  ``max_num`` tiles; ties go to the larger grid when the image is large enough), cut into tiles,
  plus a whole-image thumbnail when there is more than one tile; ImageNet normalisation.
"""

from __future__ import annotations

import os

import numpy as np

from jaxvlm.errors import ConfigError, DataFileError, MissingFileError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMG_CONTEXT_TOKEN = "<IMG_CONTEXT>"
IMG_START_TOKEN, IMG_END_TOKEN = "<img>", "</img>"
# InternVL2's default system message (``internlm2-chat`` / ``Hermes-2`` conversation templates).
INTERNVL2_SYSTEM = ("你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, "
                    "是一个有用无害的人工智能助手。")


def load_image(image):
  """A file path or PIL image -> RGB PIL image; a file PIL cannot decode is an error naming it."""
  from PIL import Image
  if not isinstance(image, (str, os.PathLike)):
    return image.convert("RGB")
  if not os.path.exists(image):
    raise MissingFileError(str(image), "image")
  try:
    with Image.open(image) as opened:
      return opened.convert("RGB")
  except (OSError, SyntaxError, ValueError) as e:  # UnidentifiedImageError is an OSError
    raise DataFileError(str(image), f"not a readable image ({type(e).__name__}: {e})") from None


def hf_image_processor(path: str):
  """``AutoImageProcessor.from_pretrained(path)`` given a preprocessor config, else None."""
  if not os.path.exists(os.path.join(path, "preprocessor_config.json")):
    return None
  from transformers import AutoImageProcessor
  return AutoImageProcessor.from_pretrained(path)


def target_ratios(min_num: int, max_num: int) -> list[tuple[int, int]]:
  """Candidate ``(cols, rows)`` grids with ``min_num <= cols*rows <= max_num``, by tile count."""
  if not 1 <= min_num <= max_num:
    raise ConfigError("max_num", max_num, f"an int >= min_num={min_num} >= 1")
  grids = {(i, j) for n in range(min_num, max_num + 1) for i in range(1, n + 1)
           for j in range(1, n + 1) if min_num <= i * j <= max_num}
  return sorted(grids, key=lambda r: r[0] * r[1])


def closest_aspect_ratio(width: int, height: int, ratios: list[tuple[int, int]],
                         image_size: int) -> tuple[int, int]:
  """The grid whose aspect ratio is closest to ``width / height`` (InternVL2 tie-breaking)."""
  aspect, best, best_diff = width / height, (1, 1), float("inf")
  for cols, rows in ratios:
    diff = abs(aspect - cols / rows)
    if diff < best_diff:
      best, best_diff = (cols, rows), diff
    elif diff == best_diff and width * height > 0.5 * image_size * image_size * cols * rows:
      best = (cols, rows)
  return best


def tile_grid(width: int, height: int, *, min_num: int, max_num: int,
              image_size: int) -> tuple[int, int]:
  """(cols, rows) of the InternVL2 tiling of a ``width`` x ``height`` image."""
  return closest_aspect_ratio(width, height, target_ratios(min_num, max_num), image_size)


def dynamic_tiles(image, *, min_num: int = 1, max_num: int = 12, image_size: int = 448,
                  use_thumbnail: bool = True) -> list:
  """InternVL2 tiles of a PIL image (row-major), plus the thumbnail when there are several."""
  width, height = image.size
  cols, rows = tile_grid(width, height, min_num=min_num, max_num=max_num, image_size=image_size)
  resized = image.resize((cols * image_size, rows * image_size))
  tiles = [resized.crop((c * image_size, r * image_size, (c + 1) * image_size,
                         (r + 1) * image_size)) for r in range(rows) for c in range(cols)]
  if use_thumbnail and len(tiles) > 1:
    tiles.append(image.resize((image_size, image_size)))
  return tiles


def normalize(tiles, image_size: int = 448) -> np.ndarray:
  """PIL tiles -> ``[N, 3, size, size]`` float32, ImageNet-normalised (bicubic resize)."""
  from PIL import Image
  arrays = [np.asarray(t.convert("RGB").resize((image_size, image_size), Image.BICUBIC),
                       np.float32) / 255.0 for t in tiles]
  x = (np.stack(arrays) - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD,
                                                                              np.float32)
  return x.transpose(0, 3, 1, 2).astype(np.float32)


def internvl2_pixel_values(image, *, max_num: int = 12, image_size: int = 448,
                           use_thumbnail: bool = True) -> np.ndarray:
  """``pixel_values [tiles, 3, S, S]`` of one image for an InternVL2 checkpoint folder."""
  tiles = dynamic_tiles(load_image(image), max_num=max_num, image_size=image_size,
                        use_thumbnail=use_thumbnail)
  return normalize(tiles, image_size)


def internvl2_image_prompt(num_tiles: int, tokens_per_tile: int) -> str:
  """``<img><IMG_CONTEXT>*(tiles*tokens)</img>``: the text that stands for one image."""
  return IMG_START_TOKEN + IMG_CONTEXT_TOKEN * (num_tiles * tokens_per_tile) + IMG_END_TOKEN


def internvl2_prompt(question: str, num_tiles: int, tokens_per_tile: int,
                     system_message: str = INTERNVL2_SYSTEM) -> str:
  """The ChatML prompt ``InternVLChatModel.chat`` builds for one image and one question: the
  ``<image>`` placeholder (prepended when absent) becomes :func:`internvl2_image_prompt`."""
  if "<image>" not in question:
    question = "<image>\n" + question
  if question.count("<image>") != 1:
    raise ConfigError("question", question.count("<image>"), "one <image> placeholder")
  text = (f"<|im_start|>system\n{system_message}<|im_end|>"
          f"<|im_start|>user\n{question}<|im_end|><|im_start|>assistant\n")
  return text.replace("<image>", internvl2_image_prompt(num_tiles, tokens_per_tile))


def image_token_id(tokenizer) -> int:
  """The ``<IMG_CONTEXT>`` id of an InternVL2 tokenizer (``internvl_chat``'s ``image_token_id``)."""
  token = tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
  if token is None or token == tokenizer.unk_token_id:
    raise ConfigError("tokenizer", type(tokenizer).__name__,
                      f"a vocabulary with {IMG_CONTEXT_TOKEN}")
  return int(token)
