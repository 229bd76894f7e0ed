"""The one prompt / batch builder of the tiny VLMs (``llava``, ``internvl_chat``, ``qwen2_5_vl``).

Tokens: :func:`vlm_tokenizer` is the :class:`~jaxvlm.data.tokenizer.CharTokenizer` plus the
extra tokens :data:`VLM_TOKENS` (``<image>`` = the image placeholder of every family, i.e. LLaVA's
``<image>``, InternVL's ``<IMG_CONTEXT>``, Qwen2.5-VL's ``<|image_pad|>``; ``<vision_start>`` /
``<vision_end>`` = InternVL's ``<img>``/``</img>`` and Qwen2.5-VL's vision start/end).

Prompt (:class:`VLMPromptFormat`): one image is written as ``[start] <image>*N [end]`` (start/end
for ``internvl_chat`` and ``qwen2_5_vl`` only; N = the model's visual tokens per image), and

  ``<bos> image(shot 1) q1\\n a1\\n ... image(shot k) qk\\n ak\\n image(query) q\\n`` -> ``answer <eos>``

with no shots for plain VQA (the interleaved multi-image ICL prompt otherwise).

Pixels (:meth:`VLMPromptFormat.pixels`): uint8 RGB -> float32 ``(x/255 - mean) / std`` with the
family's processor statistics (CLIP's for LLaVA and Qwen2.5-VL, ImageNet's for InternVL), bicubic
resize to the tower's input size (``vision_config.image_size``; for Qwen2.5-VL the nearest
multiple of ``patch_size * spatial_merge_size``); one tile per image (no InternVL dynamic tiling).
Layout per image: ``[3, S, S]`` (LLaVA / InternVL), or for Qwen2.5-VL the row-major patch grid
``[gh, gw, 3 * temporal_patch_size * P * P]`` (each patch flattened as the HF
``Qwen2VLImageProcessor`` does, the still image repeated over the temporal patch).

:func:`build_vlm_batch` returns numpy arrays with the batch first: ``input_ids``,
``attention_mask`` ``[B, S]``; with ``with_answer=True`` (training) rows are right padded and
``loss_mask [B, S]`` marks the answer and ``<eos>`` tokens (token ``t`` predicted from ``t-1``,
the convention of :func:`jaxvlm.training.causal_lm_loss`); with ``with_answer=False``
(generation) prompts are left padded. ``pixel_values`` is ``[B, n_images, ...]`` (per-image layout
above) and Qwen2.5-VL rows also carry ``image_grid_thw [B, n_images, 3]`` and the M-RoPE
``position_ids [B, 3, S]`` (computed on the host, so the forward can be jit-compiled).
:func:`model_inputs` turns such a batch into the model's keyword arguments (jit-compatible) and
:func:`generation_inputs` into :func:`jaxvlm.generation.generate`'s.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np

from jaxvlm.data import images as image_lib
from jaxvlm.data.tokenizer import CharTokenizer
from jaxvlm.errors import ConfigError, ShapeError

VLM_TOKENS = ("<image>", "<vision_start>", "<vision_end>")
FAMILIES = ("llava", "internvl_chat", "qwen2_5_vl")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def vlm_tokenizer() -> CharTokenizer:
  """The char tokenizer with :data:`VLM_TOKENS` after the alphabet (ids 99, 100, 101)."""
  return CharTokenizer(extra_tokens=VLM_TOKENS)


@dataclasses.dataclass(frozen=True)
class VLMPromptFormat:
  """How one family writes an image into the token sequence and into ``pixel_values``."""

  family: str
  image_token_id: int
  start_token_id: int | None
  end_token_id: int | None
  image_size: int  # side (px) of the image given to the tower
  tokens_per_image: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  patch_size: int = 0  # Qwen2.5-VL patch layout only
  temporal_patch_size: int = 0
  bos_token_id: int = 1
  eos_token_id: int = 2
  pad_token_id: int = 0

  @classmethod
  def from_model(cls, model, tokenizer: CharTokenizer, image_size: int = 32) -> "VLMPromptFormat":
    """The format of a ``llava`` / ``internvl_chat`` / ``qwen2_5_vl`` model (``image_size`` is
    the synthetic image side, used by Qwen2.5-VL whose tower takes any multiple of P*m)."""
    cfg = model.config
    family = cfg.model_type
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    if family in ("llava", "internvl_chat"):
      inner = family == "internvl_chat"
      return cls(family, cfg.image_token_id,
                 tokenizer.token_id("<vision_start>") if inner else None,
                 tokenizer.token_id("<vision_end>") if inner else None,
                 cfg.vision.image_size, cfg.tokens_per_image,
                 image_lib.IMAGENET_MEAN if inner else CLIP_MEAN,
                 image_lib.IMAGENET_STD if inner else CLIP_STD, **ids)
    if family == "qwen2_5_vl":
      v = cfg.vision
      factor = v.patch_size * v.spatial_merge_size
      side = max(factor, round(image_size / factor) * factor)
      return cls(family, cfg.image_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id,
                 side, (side // factor) ** 2, CLIP_MEAN, CLIP_STD, v.patch_size,
                 v.temporal_patch_size, **ids)
    raise ConfigError("model_type", family, f"one of {FAMILIES}")

  def image_ids(self) -> list[int]:
    """The token ids that stand for one image."""
    inner = [self.image_token_id] * self.tokens_per_image
    return inner if self.start_token_id is None else [self.start_token_id, *inner,
                                                      self.end_token_id]

  def pixels(self, image: np.ndarray) -> np.ndarray:
    """One uint8 ``[H, W, 3]`` image in the family's layout (module docstring)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
      raise ShapeError("image", image.shape, "an RGB [H, W, 3] array")
    if image.shape[:2] != (self.image_size, self.image_size):
      from PIL import Image
      image = np.asarray(Image.fromarray(image.astype(np.uint8)).resize(
          (self.image_size, self.image_size), Image.BICUBIC))
    x = (image.astype(np.float32) / 255.0 - np.asarray(self.mean, np.float32)) / np.asarray(
        self.std, np.float32)
    x = x.transpose(2, 0, 1)  # [3, S, S]
    if self.family != "qwen2_5_vl":
      return x
    p, t, g = self.patch_size, self.temporal_patch_size, self.image_size // self.patch_size
    x = np.broadcast_to(x[None], (t,) + x.shape).reshape(t, 3, g, p, g, p)
    return np.ascontiguousarray(x.transpose(2, 4, 1, 0, 3, 5).reshape(g, g, 3 * t * p * p))


def image_of(sample: Any) -> np.ndarray:
  """A sample's uint8 image (``.image``, or loaded from a :class:`~jaxvlm.data.vqa.VQARecord`)."""
  if getattr(sample, "image", None) is not None:
    return sample.image
  from jaxvlm.data.vqa import load_image
  return load_image(sample)


def encode_prompt(fmt: VLMPromptFormat, tokenizer: CharTokenizer, sample: Any,
                  shots: Sequence[Any] = ()) -> tuple[list[int], list[np.ndarray]]:
  """(prompt ids, images in order) of one query with its demonstrations."""
  ids, imgs = [fmt.bos_token_id], []
  for s in shots:
    ids += fmt.image_ids() + tokenizer.encode(f"{s.question}\n{s.answer}\n")
    imgs.append(image_of(s))
  ids += fmt.image_ids() + tokenizer.encode(f"{sample.question}\n")
  imgs.append(image_of(sample))
  return ids, imgs


def build_vlm_batch(samples: Sequence[Any], tokenizer: CharTokenizer, model, *,
                    seq_len: int | None = None, shots: Sequence[Sequence[Any]] | None = None,
                    with_answer: bool = True, fmt: VLMPromptFormat | None = None
                    ) -> dict[str, np.ndarray]:
  """Numpy batch of ``samples`` (each with ``image``/``question``/``answer``) for ``model``;
  ``shots[i]`` are query ``i``'s demonstrations (the same count for every row). ``seq_len``
  (default: the longest row) must hold every row: a longer row raises ``ShapeError``."""
  fmt = fmt or VLMPromptFormat.from_model(model, tokenizer, image_of(samples[0]).shape[0])
  shots = shots if shots is not None else [()] * len(samples)
  if len(shots) != len(samples) or len({len(s) for s in shots}) > 1:
    raise ShapeError("shots", [len(s) for s in shots],
                     f"{len(samples)} lists of demonstrations of one common length")
  rows, answers, pixels = [], [], []
  for sample, demos in zip(samples, shots):
    ids, imgs = encode_prompt(fmt, tokenizer, sample, demos)
    rows.append(ids)
    answers.append(tokenizer.encode(sample.answer) + [fmt.eos_token_id] if with_answer else [])
    pixels.append(np.stack([fmt.pixels(im) for im in imgs]))
  longest = max(len(r) + len(a) for r, a in zip(rows, answers))
  seq_len = seq_len or longest
  if longest > seq_len:
    raise ShapeError("seq_len", seq_len, f">= {longest} (the longest prompt + answer)")
  b = len(rows)
  out = {"input_ids": np.full((b, seq_len), fmt.pad_token_id, np.int32),
         "attention_mask": np.zeros((b, seq_len), np.int32)}
  if with_answer:
    out["loss_mask"] = np.zeros((b, seq_len), np.int32)
  for i, (prompt, answer) in enumerate(zip(rows, answers)):
    full = prompt + answer
    start = 0 if with_answer else seq_len - len(full)
    out["input_ids"][i, start:start + len(full)] = full
    out["attention_mask"][i, start:start + len(full)] = 1
    if with_answer:
      out["loss_mask"][i, len(prompt):len(full)] = 1
  out["pixel_values"] = np.stack(pixels)
  if fmt.family == "qwen2_5_vl":
    g = fmt.image_size // fmt.patch_size
    out["image_grid_thw"] = np.tile(np.asarray([1, g, g], np.int32), (b, pixels[0].shape[0], 1))
    positions, _ = model.get_rope_index(out["input_ids"], out["image_grid_thw"].reshape(-1, 3),
                                        out["attention_mask"])
    out["position_ids"] = positions.transpose(1, 0, 2).astype(np.int32)
  return out


def _qwen_pixels(pixel_values, merge: int):
  """``[B, n, gh, gw, D]`` row-major patch grids -> ``[B*n*gh*gw, D]`` in the HF merge order
  (each ``merge x merge`` block contiguous) and the matching ``image_grid_thw`` (host)."""
  b, n, gh, gw, d = pixel_values.shape
  x = jnp.asarray(pixel_values).reshape(b * n, gh // merge, merge, gw // merge, merge, d)
  x = x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, d)
  return x, np.tile(np.asarray([1, gh, gw]), (b * n, 1))


def model_inputs(model, batch: dict) -> dict:
  """Keyword arguments of ``model(...)`` for a :func:`build_vlm_batch` batch (jit-compatible:
  every shape-dependent value comes from static array shapes)."""
  px = batch["pixel_values"]
  call = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
  if model.config.model_type == "qwen2_5_vl":
    flat, grid = _qwen_pixels(px, model.config.vision.spatial_merge_size)
    return call | {"pixel_values": flat, "image_grid_thw": grid,
                   "position_ids": jnp.moveaxis(jnp.asarray(batch["position_ids"]), 1, 0)}
  return call | {"pixel_values": jnp.asarray(px).reshape((-1,) + tuple(px.shape[2:]))}


def generation_inputs(model, batch: dict) -> dict:
  """Keyword arguments of :func:`jaxvlm.generation.generate` after ``(model, input_ids,
  attention_mask, max_new_tokens)`` for a left-padded (``with_answer=False``) batch."""
  if model.config.model_type == "qwen2_5_vl":
    flat, grid = _qwen_pixels(batch["pixel_values"], model.config.vision.spatial_merge_size)
    return {"pixel_values": flat, "image_grid_thw": grid}
  px = np.asarray(batch["pixel_values"])
  return {"pixel_values": px.reshape((-1,) + px.shape[2:])}
