"""Prompt batches for the guide and the large model: the same samples with per-sample question
texts, left padded for :func:`jaxvlm.generation.generate`.

* :class:`SyntheticPrompter` — the tiny VLMs (char tokenizer, :mod:`jaxvlm.data.vlm_batches`).
* :class:`InternVL2Prompter` — an InternVL2 checkpoint: its tokenizer, the ChatML prompt of
  ``InternVLChatModel.chat`` and dynamic tiling (``max_num`` tiles + thumbnail).

Both give ``input_ids``, ``attention_mask`` ``[B, S]`` (S rounded up to a multiple of
``length_multiple`` so that one compilation serves many batches) and ``pixel_values``
``[tiles, 3, H, W]``, and name the image placeholder, EOS and pad ids.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from jaxvlm.data import images as image_lib, vlm_batches


def _left_pad(rows: Sequence[Sequence[int]], pad: int, multiple: int) -> tuple[np.ndarray, ...]:
  length = -(-max(map(len, rows)) // multiple) * multiple
  ids = np.full((len(rows), length), pad, np.int32)
  mask = np.zeros((len(rows), length), np.int32)
  for i, r in enumerate(rows):
    ids[i, length - len(r):], mask[i, length - len(r):] = r, 1
  return ids, mask


class SyntheticPrompter:
  """Tiny VLM prompts: ``<bos> image text\\n`` (:func:`vlm_batches.encode_prompt`)."""

  def __init__(self, model, tokenizer, image_size: int = 32, length_multiple: int = 16):
    self.tokenizer = tokenizer
    self.fmt = vlm_batches.VLMPromptFormat.from_model(model, tokenizer, image_size)
    self.image_token_id = self.fmt.image_token_id
    self.eos_token_id, self.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    self.multiple = length_multiple

  def num_visual(self, sample: Any) -> int:
    return self.fmt.tokens_per_image

  def batch(self, samples: Sequence[Any], texts: Sequence[str]) -> dict[str, np.ndarray]:
    rows = [vlm_batches.encode_prompt(self.fmt, self.tokenizer,
                                      dataclasses.replace(s, question=t))[0]
            for s, t in zip(samples, texts)]
    ids, mask = _left_pad(rows, self.pad_token_id, self.multiple)
    pixels = np.stack([self.fmt.pixels(vlm_batches.image_of(s)) for s in samples])
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels}

  def decode(self, ids) -> str:
    return self.tokenizer.decode(ids).strip()


class InternVL2Prompter:
  """InternVL2 chat prompts with dynamic tiling (``max_num`` tiles; the thumbnail is added when
  an image has several). ``model.config.tokens_per_image`` visual tokens per tile."""

  def __init__(self, model, tokenizer, max_num: int = 1, image_size: int | None = None,
               length_multiple: int = 64):
    self.tokenizer = tokenizer
    self.max_num, self.multiple = max_num, length_multiple
    self.image_size = image_size or model.config.vision.image_size  # 448 for InternVL2
    self.tokens_per_tile = model.config.tokens_per_image
    self.image_token_id = image_lib.image_token_id(tokenizer)
    self.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

  def _pixels(self, sample: Any) -> np.ndarray:
    from PIL import Image
    return image_lib.internvl2_pixel_values(Image.fromarray(vlm_batches.image_of(sample)),
                                            max_num=self.max_num, image_size=self.image_size)

  def num_visual(self, sample: Any) -> int:
    return self._pixels(sample).shape[0] * self.tokens_per_tile

  def batch(self, samples: Sequence[Any], texts: Sequence[str]) -> dict[str, np.ndarray]:
    pixels = [self._pixels(s) for s in samples]
    rows = [self.tokenizer(image_lib.internvl2_prompt(t, len(p), self.tokens_per_tile),
                           add_special_tokens=False)["input_ids"] for t, p in zip(texts, pixels)]
    ids, mask = _left_pad(rows, self.pad_token_id, self.multiple)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": np.concatenate(pixels)}

  def decode(self, ids) -> str:
    ids = [int(i) for i in ids]
    if self.eos_token_id in ids:
      ids = ids[:ids.index(self.eos_token_id)]
    return self.tokenizer.decode(ids, skip_special_tokens=True).strip()
