"""End-to-end question answering with a VLM and its Hugging Face processor."""

from __future__ import annotations

from typing import Sequence

from flax import nnx

from jaxvlm.generation import generate

# Processor outputs the models derive from ``input_ids`` themselves.
_TEXT_MARKERS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")


def chat(model: nnx.Module, processor, images: Sequence, text: str, max_new_tokens: int = 64,
         **generate_kwargs) -> str:
  """Greedy answer of ``model`` to one user turn (``images`` then ``text``).

  The prompt is the processor's chat template; the processor's image tensors go to ``generate``
  (which runs the model's ``prepare_inputs``, e.g. vision encoding and M-RoPE positions).
  Generation stops at the tokenizer's EOS; the answer is decoded without special tokens.
  """
  images = list(images or [])
  content = [{"type": "image"} for _ in images] + [{"type": "text", "text": text}]
  prompt = processor.apply_chat_template([{"role": "user", "content": content}],
                                         add_generation_prompt=True, tokenize=False)
  enc = processor(text=[prompt], images=images or None, return_tensors="np")
  ids, mask = enc["input_ids"], enc["attention_mask"]
  visual = {k: v for k, v in enc.items() if k not in _TEXT_MARKERS}
  tok = processor.tokenizer
  generate_kwargs.setdefault("eos_token_id", tok.eos_token_id)
  generate_kwargs.setdefault("pad_token_id", tok.pad_token_id or 0)
  out = generate(model, ids, mask, max_new_tokens, **generate_kwargs, **visual)
  new = out.new_tokens[0, :int(out.num_generated[0])]
  return tok.decode(list(map(int, new)), skip_special_tokens=True).strip()
