"""Guide and decoder prompts of an InternVL2 folder, through the shared VLM input path.

:class:`Prompter` wraps the folder's processor
(:class:`~jaxvlm.models.internvl.processor.InternVL2Processor`, tiny and real folders alike) and
builds what ``InternVLChatModel.chat`` builds in SGL's evaluation: one user turn ``<image>\\n`` +
the text, the folder's conversation template and system message, the image cut into at most
``max_num`` tiles + thumbnail (SGL's ``--dynamic``, 6 tiles in its scripts), ``<img>`` +
``<IMG_CONTEXT>`` x (tiles x tokens per tile) + ``</img>``, BOS as the tokenizer adds it
(:func:`jaxvlm.data.vlm_inputs.encode`). Generation stops at the template separator
``<|im_end|>`` (``chat``'s ``eos_token_id``) and the answer is decoded by the folder's own
tokenizer.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from jaxvlm.data import vlm_inputs
from jaxvlm.errors import ConfigError
from jaxvlm.eval.vqa_answers import image_of
from jaxvlm.models.chat import user_turn

TEMPLATE_SEP = "<|im_end|>"


class Prompter:
  """Prompt batches of one VLM folder's processor (module docstring); ``max_num`` tiles per image
  at most (None: the folder's ``max_dynamic_patch``); prompt lengths rounded up to a multiple of
  ``length_multiple`` (one compilation serves batches of similar lengths)."""

  def __init__(self, processor, max_num: int | None = None, length_multiple: int = 16):
    images = getattr(processor, "image_processor", None)
    if not hasattr(images, "max_num") or not hasattr(processor, "tokens_per_tile"):
      raise ConfigError("processor", type(processor).__name__,
                        "an InternVL2 processor (an internvl_chat folder)")
    if max_num is not None:
      if max_num < 1:
        raise ConfigError("data.max_num", max_num, "an int >= 1 (tiles per image)")
      images.max_num = max_num
    self.processor, self.tokenizer = processor, processor.tokenizer
    self.multiple = length_multiple
    self.image_token_id = processor.image_token_id
    self.eos_token_id = self.tokenizer.convert_tokens_to_ids(TEMPLATE_SEP)
    pad = self.tokenizer.pad_token_id
    self.pad_token_id = 0 if pad is None else pad

  def num_tiles(self, sample: Any) -> int:
    """Tiles of the sample's image (its size decides the grid, as ``dynamic_preprocess``)."""
    return self.processor.image_processor.num_tiles(image_of(sample))

  def num_visual(self, sample: Any) -> int:
    return self.num_tiles(sample) * self.processor.tokens_per_tile

  def conversation(self, sample: Any, text: str) -> list[dict]:
    return user_turn([image_of(sample)], text)

  def batch(self, samples: Sequence[Any], texts: Sequence[str],
            pixels: bool = True) -> dict[str, np.ndarray]:
    """:func:`~jaxvlm.data.vlm_inputs.encode` of one user turn per sample (its image, then its
    text): ``input_ids``, ``attention_mask``, ``pixel_values [tiles, 3, S, S]`` (not with
    ``pixels=False``: the tiles are counted, not cut), ``num_patches [B]``,
    ``visual_tokens [B]``."""
    return vlm_inputs.encode(self.processor, [self.conversation(s, t)
                                              for s, t in zip(samples, texts)],
                             pad_to_multiple=self.multiple,
                             processor_kwargs=None if pixels else {"pixels": False})

  def decode(self, ids) -> str:
    """Generated ids up to the separator, decoded without special tokens."""
    ids = [int(i) for i in ids]
    if self.eos_token_id in ids:
      ids = ids[:ids.index(self.eos_token_id)]
    return self.tokenizer.decode(ids, skip_special_tokens=True).split(TEMPLATE_SEP)[0].strip()
