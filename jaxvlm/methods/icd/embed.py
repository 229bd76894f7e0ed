"""CLIP embeddings of VQA samples (image + question), fused, cached on disk.

``encode`` runs the CLIP dual encoder (:class:`jaxvlm.models.clip.CLIPModel`) in batches on
the CLIP image processor's output (images of any size: short side resized, centre crop) and the
tokenizer's ids, and returns the projected image and text features; ``fuse`` combines them per
``fusion``: ``concat`` (both L2-normalised, concatenated), ``sum`` (normalised sum of the
normalised features), ``image`` or ``text`` (one normalised feature). ``cached_embeddings`` stores the fused
matrix as ``<name>.npy`` plus ``<name>.json`` (the sample ids in row order, fusion, model) and
reuses it while the ids and settings match, so training never re-encodes.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Sequence

import jax
import numpy as np
from PIL import Image

from jaxvlm import io
from jaxvlm.data import images as image_lib
from jaxvlm.errors import ConfigError

FUSIONS = ("concat", "sum", "image", "text")


def tokenize(tokenizer, texts: Sequence[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
  """Right-padded ``(input_ids, attention_mask)`` ``[N, max_len]``, every row ending in the
  tokenizer's EOS (where the CLIP text tower pools): a CLIP tokenizer adds it itself, another
  tokenizer (the tiny preset's) gets it appended; texts are truncated to fit."""
  eos = tokenizer.eos_token_id
  ids = np.full((len(texts), max_len), tokenizer.pad_token_id or 0, np.int64)
  mask = np.zeros_like(ids)
  for r, text in enumerate(texts):
    row = list(tokenizer(text, truncation=True, max_length=max_len)["input_ids"])
    if not row or row[-1] != eos:
      row = row[:max_len - 1] + [eos]
    ids[r, :len(row)], mask[r, :len(row)] = row, 1
  return ids, mask


def pixels(image_processor, images: Sequence) -> np.ndarray:
  """CLIP pixel values ``[N, 3, S, S]`` of images of any size (PIL images, uint8 arrays or
  paths) through the CLIP image processor (resize of the short side, centre crop, normalise)."""
  loaded = [Image.fromarray(np.asarray(im, np.uint8)) if isinstance(im, np.ndarray) else
            image_lib.load_image(im) for im in images]
  return np.asarray(image_processor(images=loaded, return_tensors="np")["pixel_values"],
                    np.float32)


def encode(clip, image_processor, tokenizer, images: Sequence, questions: Sequence[str], *,
           batch_size: int = 64, max_len: int = 32) -> tuple[np.ndarray, np.ndarray]:
  """``(image_features, text_features)``, each ``[N, projection_dim]`` float32 (projected,
  not normalised), as ``transformers``' ``CLIPModel.get_image_features`` / ``get_text_features``
  on the processor's output."""
  img_fn = jax.jit(lambda px: clip.get_image_features(px))
  txt_fn = jax.jit(lambda ids, mask: clip.get_text_features(ids, mask))
  img, txt = [], []
  for s in range(0, len(images), batch_size):
    img.append(np.asarray(img_fn(pixels(image_processor, images[s:s + batch_size]))))
    ids, mask = tokenize(tokenizer, questions[s:s + batch_size], max_len)
    txt.append(np.asarray(txt_fn(ids, mask)))
  return np.concatenate(img).astype(np.float32), np.concatenate(txt).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def fuse(image: np.ndarray, text: np.ndarray, fusion: str) -> np.ndarray:
  """One embedding per sample from the image and text features (see the module docstring)."""
  if fusion == "concat":
    return np.concatenate([_unit(image), _unit(text)], axis=-1)
  if fusion == "sum":
    return _unit(_unit(image) + _unit(text))
  if fusion == "image":
    return _unit(image)
  if fusion == "text":
    return _unit(text)
  raise ConfigError("embedding.fusion", fusion, f"one of {FUSIONS}")


def cached_embeddings(cache_dir: str, name: str, ids: Sequence[int], settings: dict,
                      compute: Callable[[], np.ndarray]) -> np.ndarray:
  """``<cache_dir>/<name>.npy`` when its index json lists the same ``ids`` and ``settings``,
  else ``compute()`` (an ``[len(ids), F]`` array), written atomically before returning."""
  npy, index = os.path.join(cache_dir, f"{name}.npy"), os.path.join(cache_dir, f"{name}.json")
  ids = [int(i) for i in ids]
  if os.path.exists(npy) and os.path.exists(index):
    with open(index) as f:
      meta = json.load(f)
    if meta.get("ids") == ids and meta.get("settings") == settings:
      return np.load(npy)
  emb = np.asarray(compute(), np.float32)
  if emb.shape[0] != len(ids):
    raise ConfigError(f"embeddings {name!r}", emb.shape, f"{len(ids)} rows, one per sample id")
  with io.atomic_open(npy, "wb") as f:
    np.save(f, emb)
  io.write_json(index, {"ids": ids, "settings": settings, "shape": list(emb.shape)})
  return emb
