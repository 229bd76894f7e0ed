"""The one input path of every VLM (tiny or real): chat messages -> the folder's processor -> arrays.

:func:`encode` takes Hugging Face chat conversations, one per row. A content item is
``{"type": "image", "image": PIL image | uint8 [H, W, 3] array | path}`` or
``{"type": "text", "text": ...}``; a message may hold several images, and a conversation several
turns (ICL demonstrations are earlier turns, or images interleaved in one user turn). Each row is
rendered with the processor's own chat template and tokenized by the processor, which expands
every image placeholder by that image's own size (Qwen2.5-VL ``smart_resize`` grids, LLaVA-1.5's
CLIP resize + centre crop, InternVL tiles). Rows are left padded into one batch:

* ``input_ids``, ``attention_mask`` ``[B, S]``;
* the visual arrays as the processor gives them, concatenated over the rows in order
  (``pixel_values``; Qwen2.5-VL ``image_grid_thw [n_images, 3]``; InternVL ``num_patches``), so
  rows with different numbers of visual tokens share one batch;
* Qwen2.5-VL ``position_ids [3, B, S]`` (M-RoPE, computed on the host);
* ``images_per_row [B]``, ``image_sizes [n_images, 2]`` (height, width as given) and
  ``visual_tokens [n_images]`` (placeholder tokens of each image);
* with ``answers``: ``loss_mask [B, S]``, 1 exactly on the answer tokens and the end-of-turn token
  (``<|im_end|>`` for ChatML; the tokenizer's EOS where the template writes none, as LLaVA-1.5
  trains), the convention of :func:`jaxvlm.training.causal_lm_loss` (token t predicted from t-1).

The answer is rendered as the template renders an assistant turn and tokenized after the prompt,
so the prompt tokens are those generation sees. :func:`model_kwargs` and
:func:`generation_kwargs` turn a batch into the model's and :func:`~jaxvlm.generation.generate`'s
keyword arguments; :func:`as_rows` gives the leading-batch-axis layout the ``Trainer`` shards and
micro-batches (every row with the same number and sizes of images, as synthetic data has).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from jaxvlm.data import images as image_lib
from jaxvlm.errors import ConfigError, InputError, ShapeError

# Keys of an encoded batch that describe it rather than feed the model.
BOOKKEEPING = ("loss_mask", "images_per_row", "image_sizes", "visual_tokens")
# Processor outputs the models derive from ``input_ids`` themselves.
_DERIVED = ("mm_token_type_ids", "token_type_ids")


class ConversationError(InputError):
  """A conversation that cannot be encoded (a missing image, a bad content item)."""


def _image(value, where: str):
  """PIL RGB image of a content item's ``image`` value."""
  from PIL import Image
  if isinstance(value, np.ndarray):
    if value.ndim != 3 or value.shape[-1] != 3:
      raise ShapeError(f"{where}: image", value.shape, "a uint8 RGB [H, W, 3] array")
    return Image.fromarray(value.astype(np.uint8))
  if value is None:
    raise ConversationError(f"{where}: an image item without an image (each "
                            "{'type': 'image'} item needs its 'image': PIL image, array or path)")
  return image_lib.load_image(value)


def _split_images(conversation: Sequence[dict], row: int) -> tuple[list[dict], list]:
  """(messages with bare image items, the PIL images in order)."""
  messages, images = [], []
  for m, message in enumerate(conversation):
    if not isinstance(message, dict) or "role" not in message or "content" not in message:
      raise ConversationError(f"conversation {row}, message {m}: expected a dict with 'role' "
                              f"and 'content', got {message!r:.80}")
    content = message["content"]
    if isinstance(content, str):
      messages.append(dict(message))
      continue
    items = []
    for i, item in enumerate(content):
      kind = item.get("type") if isinstance(item, dict) else None
      if kind == "image":
        images.append(_image(item.get("image"), f"conversation {row}, message {m}, item {i}"))
        items.append({"type": "image"})
      elif kind == "text":
        items.append({"type": "text", "text": str(item.get("text", ""))})
      else:
        raise ConversationError(f"conversation {row}, message {m}, item {i}: type {kind!r}, "
                                "expected 'image' or 'text'")
    messages.append({**message, "content": items})
  return messages, images


def _render(processor, messages, add_generation_prompt: bool) -> str:
  return processor.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                       tokenize=False)


def _tokenizer(processor):
  return getattr(processor, "tokenizer", processor)


def _placeholder(processor) -> str:
  """The text that stands for one image in a rendered template (before the processor expands
  it; InternVL2 writes ``<image>``, the others their image token)."""
  return getattr(processor, "image_placeholder", None) or _image_token(processor)


def _image_token(processor) -> str:
  token = getattr(processor, "image_token", None)
  if token is None:
    raise ConfigError("processor", type(processor).__name__, "a VLM processor with an "
                      "image_token (images need one; a tokenizer takes text only)")
  return token


def _end_of_turn(tokenizer, answer_text: str) -> str:
  """The answer as trained: its rendered text up to the end-of-turn token, whose text is
  appended (the tokenizer's EOS) when the template writes none after the answer."""
  text = answer_text.rstrip()
  specials = [t for t in tokenizer.all_special_tokens if t] + [
      t.content for t in tokenizer.added_tokens_decoder.values() if t.special]
  if any(text.endswith(t) for t in specials):
    return text
  if tokenizer.eos_token is None:
    raise ConfigError("tokenizer.eos_token", None, "an EOS token to end the answer with")
  return text + tokenizer.eos_token


def _pieces(processor, messages: list[dict], answer: str | None, add_generation_prompt: bool
            ) -> list[tuple[str, bool]]:
  """(text, is_answer) pieces of a row: the prompt, then the answer turn (if any)."""
  if answer is None:
    return [(_render(processor, messages, add_generation_prompt), False)]
  prompt = _render(processor, messages, True)
  full = _render(processor, messages + [{"role": "assistant",
                                         "content": [{"type": "text", "text": answer}]}], False)
  if not full.startswith(prompt):
    raise ConfigError("chat_template", type(processor).__name__,
                      "a template whose assistant turn extends the generation prompt")
  return [(prompt, False), (_end_of_turn(_tokenizer(processor), full[len(prompt):]), True)]


def _encode_piece(processor, text: str, images: list, first: bool,
                  processor_kwargs: Mapping) -> dict[str, np.ndarray]:
  tok = _tokenizer(processor)
  add_special = first and not (tok.bos_token and text.startswith(tok.bos_token))
  kwargs = dict(text=[text], return_tensors="np", add_special_tokens=add_special)
  if images:
    return dict(processor(images=images, **kwargs, **processor_kwargs))
  if processor is tok:
    return dict(tok(**kwargs))
  return dict(tok(text=[text], return_tensors="np", add_special_tokens=add_special))


def _encode_row(processor, conversation, answer, add_generation_prompt: bool, row: int,
                processor_kwargs: Mapping) -> dict:
  messages, images = _split_images(conversation, row)
  slots = 0
  pieces = _pieces(processor, messages, answer, add_generation_prompt)
  if images:
    slots = sum(text.count(_placeholder(processor)) for text, _ in pieces)
    if slots != len(images):
      raise ShapeError(f"conversation {row}: image placeholders", slots,
                       f"{len(images)} (one per image item)")
  ids, loss, visual, taken = [], [], {}, 0
  for p, (text, is_answer) in enumerate(pieces):
    n = text.count(_placeholder(processor)) if images else 0
    enc = _encode_piece(processor, text, images[taken:taken + n], p == 0, processor_kwargs)
    taken += n
    piece_ids = enc.pop("input_ids")[0].astype(np.int64)
    enc.pop("attention_mask", None)
    for key in _DERIVED:
      enc.pop(key, None)
    ids.append(piece_ids)
    loss.append(np.full(len(piece_ids), int(is_answer), np.int32))
    for key, value in enc.items():
      visual.setdefault(key, []).append(np.asarray(value))
  image_id = getattr(processor, "image_token_id", None)
  if image_id is None and images:
    image_id = _tokenizer(processor).convert_tokens_to_ids(_image_token(processor))
  row_ids = np.concatenate(ids)
  return {"ids": row_ids, "loss": np.concatenate(loss), "images": images,
          "visual": {k: np.concatenate(v) for k, v in visual.items()},
          "image_tokens": int(np.sum(row_ids == image_id)) if images else 0}


def _visual_tokens(rows: list[dict]) -> np.ndarray:
  """Placeholder tokens per image (a row's count split by image; from grids or tiles)."""
  counts = []
  for r in rows:
    n = len(r["images"])
    if not n:
      continue
    v = r["visual"]
    if "image_grid_thw" in v:
      weights = np.prod(v["image_grid_thw"], axis=1)
    elif "num_patches" in v:
      weights = v["num_patches"]
    else:
      weights = np.ones(n)
    counts += list(np.round(r["image_tokens"] * weights / np.sum(weights)).astype(np.int64))
  return np.asarray(counts, np.int64)


def encode(processor, conversations: Sequence[Sequence[dict]], *,
           answers: Sequence[str] | None = None, add_generation_prompt: bool = True,
           pad_to_multiple: int = 1,
           processor_kwargs: Mapping | None = None) -> dict[str, np.ndarray]:
  """One left-padded batch of ``conversations`` through ``processor`` (module docstring).

  ``answers[i]`` is row ``i``'s assistant turn (training, scoring): it is appended after the
  generation prompt and ``loss_mask`` marks it. ``pad_to_multiple`` rounds the length up (one
  compilation for batches of similar lengths). ``processor_kwargs`` go to the processor's calls
  on text with images (InternVL2's ``pixels=False``: the prompt ids without the pixels).
  """
  if answers is not None and len(answers) != len(conversations):
    raise ShapeError("answers", len(answers), f"{len(conversations)} (one per conversation)")
  if not conversations:
    raise ShapeError("conversations", 0, "at least one conversation")
  rows = [_encode_row(processor, c, None if answers is None else answers[i],
                      add_generation_prompt, i, processor_kwargs or {})
          for i, c in enumerate(conversations)]
  length = max(len(r["ids"]) for r in rows)
  length = -(-length // pad_to_multiple) * pad_to_multiple
  tok = _tokenizer(processor)
  pad = tok.pad_token_id if tok.pad_token_id is not None else 0
  b = len(rows)
  out = {"input_ids": np.full((b, length), pad, np.int64),
         "attention_mask": np.zeros((b, length), np.int64)}
  if answers is not None:
    out["loss_mask"] = np.zeros((b, length), np.int32)
  for i, r in enumerate(rows):
    n = len(r["ids"])
    out["input_ids"][i, length - n:] = r["ids"]
    out["attention_mask"][i, length - n:] = 1
    if answers is not None:
      out["loss_mask"][i, length - n:] = r["loss"]
  keys = sorted({k for r in rows for k in r["visual"]})
  for key in keys:
    out[key] = np.concatenate([r["visual"][key] for r in rows if key in r["visual"]])
  out["images_per_row"] = np.asarray([len(r["images"]) for r in rows], np.int64)
  out["image_sizes"] = np.asarray([(im.height, im.width) for r in rows for im in r["images"]],
                                  np.int64).reshape(-1, 2)
  out["visual_tokens"] = _visual_tokens(rows)
  if "image_grid_thw" in out:
    out["position_ids"] = _mrope_positions(processor, out)
  return out


def _mrope_positions(processor, batch: dict) -> np.ndarray:
  from jaxvlm.models.qwen2_5_vl.modeling import rope_index
  tok = _tokenizer(processor)
  video = getattr(processor, "video_token", None) or "<|video_pad|>"
  positions, _ = rope_index(
      batch["input_ids"], batch["image_grid_thw"], batch["attention_mask"],
      image_token_id=tok.convert_tokens_to_ids(_image_token(processor)),
      video_token_id=tok.convert_tokens_to_ids(video),
      spatial_merge_size=processor.image_processor.merge_size)
  return positions


def _family(model) -> str:
  return model.config.model_type


def as_rows(batch: dict, merge_size: int = 2) -> dict[str, np.ndarray]:
  """``batch`` with a leading batch axis on every array (the ``Trainer``'s layout).

  ``pixel_values`` becomes ``[B, n, ...]`` (LLaVA / InternVL: ``[B, n, 3, S, S]``; Qwen2.5-VL:
  ``[B, n, gh/m, gw/m, m*m, D]`` for grids of ``m = merge_size``, so the grid is in the static
  shape) and Qwen2.5-VL positions ``[B, 3, S]``. Every row must carry the same number of images
  of one size (tiles); otherwise ``ShapeError``.
  """
  b = batch["input_ids"].shape[0]
  out = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "loss_mask")}
  per_row = batch["images_per_row"]
  if not per_row.any():
    return out
  if len(set(per_row.tolist())) != 1:
    raise ShapeError("images_per_row", per_row.tolist(), "the same image count in every row")
  n = int(per_row[0])
  px = np.asarray(batch["pixel_values"])
  if "image_grid_thw" in batch:
    grids = np.asarray(batch["image_grid_thw"])
    if len({tuple(g) for g in grids.tolist()}) != 1 or grids[0, 0] != 1:
      raise ShapeError("image_grid_thw", grids.tolist(), "one still-image grid for every image")
    _, gh, gw = grids[0]
    out["pixel_values"] = px.reshape(b, n, gh // merge_size, gw // merge_size,
                                     merge_size * merge_size, px.shape[-1])
    out["position_ids"] = np.moveaxis(batch["position_ids"], 0, 1)
    return out
  tiles = batch.get("num_patches")
  if tiles is not None and len(set(np.asarray(tiles).tolist())) != 1:
    raise ShapeError("num_patches", np.asarray(tiles).tolist(), "one tile count for every image")
  out["pixel_values"] = px.reshape((b, -1) + px.shape[1:])
  return out


def model_kwargs(model, batch: dict) -> dict[str, Any]:
  """Keyword arguments of ``model(...)`` for an :func:`encode` batch or its :func:`as_rows`
  form (jit-compatible in the rows form: the Qwen2.5-VL grid comes from static shapes)."""
  import jax.numpy as jnp
  call = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
  px = batch.get("pixel_values")
  if px is None:
    return call
  if _family(model) != "qwen2_5_vl":
    rows = px.ndim == 5
    return call | {"pixel_values": jnp.reshape(px, (-1,) + tuple(px.shape[2:])) if rows else px}
  if px.ndim == 2:
    return call | {"pixel_values": px, "image_grid_thw": np.asarray(batch["image_grid_thw"]),
                   "position_ids": batch["position_ids"]}
  b, n, hb, wb, mm, d = px.shape
  m = int(round(mm ** 0.5))
  grid = np.tile(np.asarray([1, hb * m, wb * m]), (b * n, 1))
  return call | {"pixel_values": jnp.reshape(px, (-1, d)), "image_grid_thw": grid,
                 "position_ids": jnp.moveaxis(jnp.asarray(batch["position_ids"]), 1, 0)}


def generation_kwargs(model, batch: dict) -> dict[str, Any]:
  """Keyword arguments of :func:`jaxvlm.generation.generate` after ``(model, input_ids,
  attention_mask, max_new_tokens)`` for an :func:`encode` batch."""
  keys = ("pixel_values", "image_grid_thw") if _family(model) == "qwen2_5_vl" else (
      "pixel_values",)
  return {k: batch[k] for k in keys if k in batch}


__all__ = ["BOOKKEEPING", "ConversationError", "as_rows", "encode", "generation_kwargs",
           "model_kwargs"]
