"""Greedy VQA answering through :func:`jaxvlm.models.chat.chat_batch`, scored by the official
VQA accuracy, per question type, optionally with in-context demonstrations or blank images.

A sample is anything with ``image`` (or a :class:`~jaxvlm.data.vqa.VQARecord`'s image file),
``question``, ``answers`` (the ten annotator answers), ``answer`` (majority) and
``question_type``. :func:`vqa_conversation` is the default prompt (one user turn: the image, then
the question and an optional instruction; demonstrations as earlier turns); methods pass their
own ``conversation`` (e.g. the lmms-eval VQAv2 prompt, Lever-Plus's ICL layout).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any, Callable, Sequence

import numpy as np

from jaxvlm.errors import ShapeError
from jaxvlm.eval.vqa import normalize_answer, vqa_accuracy

Conversation = list[dict]


def image_of(sample: Any):
  """A sample's image: its ``image`` array, else the file of a :class:`VQARecord`."""
  if getattr(sample, "image", None) is not None:
    return sample.image
  return sample.image_path


def vqa_conversation(sample: Any, shots: Sequence[Any] = (), instruction: str = ""
                     ) -> Conversation:
  """User turn(s): each demonstration (image, question -> its answer as the assistant turn),
  then the sample's image and question (``instruction`` appended on a new line)."""
  def user(s):
    text = s.question + (f"\n{instruction}" if instruction else "")
    return {"role": "user", "content": [{"type": "image", "image": image_of(s)},
                                        {"type": "text", "text": text}]}
  turns = []
  for s in shots:
    turns += [user(s), {"role": "assistant", "content": [{"type": "text", "text": s.answer}]}]
  return turns + [user(sample)]


def answer_all(model, processor, conversations: Sequence[Conversation], *, batch_size: int = 64,
               max_new_tokens: int = 16, pad_to_multiple: int = 16, **generate_kwargs
               ) -> list[str]:
  """Answers of every conversation, ``batch_size`` rows at a time; the last batch is padded
  with copies so that one compiled program serves every batch of similar length."""
  from jaxvlm.models.chat import chat_batch
  if batch_size < 1:
    raise ShapeError("batch_size", batch_size, "an int >= 1")
  out = []
  for start in range(0, len(conversations), batch_size):
    chunk = list(conversations[start:start + batch_size])
    real = len(chunk)
    chunk += [chunk[-1]] * (batch_size - real)
    out += chat_batch(model, processor, chunk, max_new_tokens, pad_to_multiple=pad_to_multiple,
                      **generate_kwargs)[:real]
  return out


def score_vqa(predictions: Sequence[str], samples: Sequence[Any]) -> dict:
  """``accuracy`` (official VQA, mean over samples), ``strict_match`` (normalised prediction ==
  normalised majority answer), ``per_type`` accuracy and the ``predictions``."""
  if not samples:
    raise ShapeError("samples", 0, "at least one sample to score")
  scores = [vqa_accuracy(p, s.answers) for p, s in zip(predictions, samples)]
  by_type = defaultdict(list)
  for score, s in zip(scores, samples):
    by_type[getattr(s, "question_type", "all")].append(score)
  strict = [normalize_answer(p) == normalize_answer(s.answer)
            for p, s in zip(predictions, samples)]
  return {"accuracy": float(np.mean(scores)), "strict_match": float(np.mean(strict)),
          "per_type": {k: float(np.mean(v)) for k, v in sorted(by_type.items())},
          "predictions": list(predictions)}


def evaluate_vqa(model, processor, samples: Sequence[Any], *,
                 shots: Sequence[Sequence[Any]] | None = None,
                 conversation: Callable[..., Conversation] = vqa_conversation,
                 batch_size: int = 64, max_new_tokens: int = 16, **generate_kwargs) -> dict:
  """Greedy answers to ``samples`` (``conversation(sample, shots)`` prompts) and their
  :func:`score_vqa` scores."""
  shots = list(shots) if shots is not None else [()] * len(samples)
  conversations = [conversation(s, d) for s, d in zip(samples, shots)]
  predictions = answer_all(model, processor, conversations, batch_size=batch_size,
                           max_new_tokens=max_new_tokens, **generate_kwargs)
  return score_vqa(predictions, samples)


def blank_images(samples: Sequence[Any], background=(24, 24, 24)) -> list:
  """Copies of ``samples`` whose images show only ``background`` (an image-blind reference:
  accuracy above it comes from reading the image)."""
  out = []
  for s in samples:
    image = np.empty_like(np.asarray(s.image))
    image[:] = background
    out.append(dataclasses.replace(s, image=image))
  return out


__all__ = ["answer_all", "blank_images", "evaluate_vqa", "image_of", "score_vqa",
           "vqa_conversation"]
