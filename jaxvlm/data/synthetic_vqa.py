"""Seeded synthetic VQA: rendered shape scenes with questions and ten-annotator answers.

A scene is an ``image_size`` x ``image_size`` RGB uint8 image on a plain dark background with
``min_objects..max_objects`` objects; each object is a (shape, color) pair drawn inside one cell of
a ``grid`` x ``grid`` layout, and the objects of one scene have distinct shapes, distinct colors
and distinct cells, so a question naming one shape (or color) refers to one small image region.

Question types (``question_types``):

* ``color``     "what color is the square?"     -> "red"
* ``shape``     "what shape is red?"            -> "square"
* ``count``     "how many objects?"             -> "3"           (answer_type ``number``)
* ``position``  "where is the circle?"          -> "top left"    (quadrant of its cell; an odd
  grid's middle row/column reads ``middle`` / ``center``)
* ``label``     "what is the label of the cross?" -> a made-up word from a per-dataset mapping
  class -> word (:func:`label_mapping`, seeded by ``label_seed``; the class is the shape, or
  ``"<color> <shape>"`` with ``label_by="shape_color"``). Nothing in the image or question
  reveals the word: a model learns it only from same-class demonstrations in context. With
  ``word_pool=W`` the words come from W fixed ones, each ``label_seed`` another assignment
  (per-episode mappings for in-context learning, :mod:`jaxvlm.methods.icd.icl`). With
  ``label_by="shape"`` and one ``label_seed`` the word is a function of the question text
  (which names the shape), so a model trained on such a split answers it without the image.
* ``detail``    "what number is on the red object?" -> "3"       (answer_type ``number``): in
  these scenes every object carries a number 1..4, drawn as that many white blocks at fixed
  spots of its cell (:func:`mark_mask`); the question names one object by its colour, so the
  answer lives in that one cell (one visual token when a token covers a cell) while the other
  objects' numbers are distractors. Not among the default types (:data:`QUESTION_TYPES`); a
  split without it renders and draws exactly as before.

Each :class:`VQASample` has the ten answers of the VQA annotation layout: the true answer, with
a seeded 0..3 of them replaced by a synonym or a wrong answer of the same type (so the official
``min(#matches/3, 1)`` accuracy is exercised); ``answer`` is the majority (always the true one).
``target_cells`` are the grid cells the answer depends on (the named object's cell; every
object's cell for ``count``). Sample ``i`` of ``make_vqa_split(n, seed=s)`` depends only on
``(s, i)`` and the options, so a longer split extends a shorter one.

:func:`write_vqa_folder` writes a split in the VQAv2 / OK-VQA file layout
(``questions.json``, ``annotations.json``, ``images/COCO_<split>_<id:012d>.png``) that
:func:`jaxvlm.data.vqa.read_vqa` reads back. Every question / answer character is in
:data:`jaxvlm.data.tokenizer.ALPHABET`.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
from collections import Counter
from typing import Sequence

import numpy as np

from jaxvlm import io
from jaxvlm.data.vqa import coco_file_name
from jaxvlm.errors import ConfigError

SHAPES = ("square", "circle", "triangle", "cross", "diamond")
COLORS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240),
          "yellow": (240, 220, 40), "purple": (170, 60, 210), "orange": (250, 140, 20)}
BACKGROUND = (24, 24, 24)
QUESTION_TYPES = ("color", "shape", "count", "position", "label")
ALL_QUESTION_TYPES = QUESTION_TYPES + ("detail",)
MAX_MARK = 4
_SYNONYMS = {"top left": "upper left", "top right": "upper right", "bottom left": "lower left",
             "bottom right": "lower right", "square": "box", "circle": "ball", "cross": "plus",
             "diamond": "rhombus", "triangle": "pyramid", "purple": "violet"}
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_CONSONANTS, _VOWELS = "bdfgklmnprstvz", "aeiou"


@dataclasses.dataclass(frozen=True)
class SceneObject:
  shape: str
  color: str
  row: int
  col: int
  mark: int = 0  # the number drawn on the object (``detail`` scenes), 0 = none


@dataclasses.dataclass(frozen=True)
class VQASample:
  question_id: int
  image_id: int
  image: np.ndarray  # uint8 [H, W, 3]
  question: str
  answers: tuple[str, ...]  # ten annotator answers
  answer: str  # majority answer
  question_type: str
  answer_type: str  # "other" | "number"
  objects: tuple[SceneObject, ...]
  target_cells: tuple[tuple[int, int], ...]  # (row, col) cells the answer depends on
  label_class: str | None  # class key of a ``label`` question, else None


def label_classes(label_by: str = "shape") -> list[str]:
  """The class keys of ``label`` questions: shapes, or ``"<color> <shape>"`` pairs."""
  if label_by == "shape":
    return list(SHAPES)
  if label_by == "shape_color":
    return [f"{c} {s}" for s in SHAPES for c in COLORS]
  raise ConfigError("label_by", label_by, "'shape' or 'shape_color'")


@functools.lru_cache(maxsize=None)
def label_words(word_pool: int = 0) -> tuple[str, ...]:
  """The made-up consonant-vowel-consonant-vowel words labels are drawn from: all of them, or
  with ``word_pool > 0`` a fixed seeded subset of that many."""
  words = tuple("".join(w) for w in itertools.product(_CONSONANTS, _VOWELS, _CONSONANTS, _VOWELS))
  if not word_pool:
    return words
  if not 0 < word_pool <= len(words):
    raise ConfigError("word_pool", word_pool, f"0 (all words) or 1..{len(words)}")
  return tuple(words[int(i)] for i in np.random.default_rng(11).choice(len(words), word_pool,
                                                                       replace=False))


def label_mapping(label_seed: int, label_by: str = "shape", word_pool: int = 0) -> dict[str, str]:
  """class -> made-up word (:func:`label_words`), distinct per class, seeded. With a small
  ``word_pool`` each seed is another assignment of the same few words (per-episode mappings whose
  word for a class only a same-class demonstration reveals)."""
  words = label_words(word_pool)
  classes = label_classes(label_by)
  if len(classes) > len(words):
    raise ConfigError("word_pool", word_pool, f">= {len(classes)} (one word per class)")
  picks = np.random.default_rng([label_seed, 7]).choice(len(words), len(classes), replace=False)
  return {c: words[int(i)] for c, i in zip(classes, picks)}


def position_word(row: int, col: int, grid: int) -> str:
  """``"<top|middle|bottom> <left|center|right>"`` of a cell (quadrant for even grids)."""
  def side(i: int, words: tuple[str, str, str]) -> str:
    return words[0] if 2 * i + 1 < grid else words[2] if 2 * i + 1 > grid else words[1]
  return f"{side(row, ('top', 'middle', 'bottom'))} {side(col, ('left', 'center', 'right'))}"


def shape_mask(shape: str, size: int) -> np.ndarray:
  """``[size, size]`` bool mask of a shape centred in a cell (pixel centres in [-1, 1])."""
  t = (np.arange(size) + 0.5) / size * 2 - 1
  y, x = np.meshgrid(t, t, indexing="ij")
  ax, ay = np.abs(x), np.abs(y)
  if shape == "square":
    return (ax <= 0.75) & (ay <= 0.75)
  if shape == "circle":
    return x * x + y * y <= 0.8 ** 2
  if shape == "triangle":  # apex up
    return (y <= 0.8) & (ax <= 0.5 * (y + 0.85))
  if shape == "cross":
    return ((ax <= 0.3) & (ay <= 0.9)) | ((ay <= 0.3) & (ax <= 0.9))
  if shape == "diamond":
    return ax + ay <= 0.9
  raise ConfigError("shape", shape, f"one of {SHAPES}")


def mark_mask(mark: int, size: int) -> np.ndarray:
  """``[size, size]`` bool mask of number ``mark`` (0..4): that many blocks of side
  ``max(1, size // 4)``, one centred in each quadrant of the cell, in reading order."""
  if not 0 <= mark <= MAX_MARK:
    raise ConfigError("mark", mark, f"an int in [0, {MAX_MARK}]")
  side, half = max(1, size // 4), size // 2
  out = np.zeros((size, size), bool)
  for q in range(mark):
    r0, c0 = (q // 2) * half + (half - side) // 2, (q % 2) * half + (half - side) // 2
    out[r0:r0 + side, c0:c0 + side] = True
  return out


def render_scene(objects: Sequence[SceneObject], image_size: int, grid: int) -> np.ndarray:
  """uint8 ``[image_size, image_size, 3]``: each object fills its cell's shape mask; its
  number (if any) is drawn over it in white (:func:`mark_mask`)."""
  image = np.empty((image_size, image_size, 3), np.uint8)
  image[:] = BACKGROUND
  bounds = np.linspace(0, image_size, grid + 1).round().astype(int)
  for o in objects:
    r0, r1, c0, c1 = bounds[o.row], bounds[o.row + 1], bounds[o.col], bounds[o.col + 1]
    size = min(r1 - r0, c1 - c0)
    cell = image[r0:r0 + size, c0:c0 + size]
    cell[shape_mask(o.shape, size)] = COLORS[o.color]
    if o.mark:
      cell[mark_mask(o.mark, size)] = 255
  return image


def _check(image_size: int, grid: int, min_objects: int, max_objects: int,
           question_types: Sequence[str]) -> None:
  if grid < 1 or image_size < 4 * grid:
    raise ConfigError("image_size", image_size, f"at least 4 pixels per cell (>= {4 * grid} for "
                      f"grid={grid})")
  limit = min(len(SHAPES), len(COLORS), grid * grid)
  if not 1 <= min_objects <= max_objects <= limit:
    raise ConfigError("max_objects", max_objects,
                      f"1 <= min_objects={min_objects} <= max_objects <= {limit}")
  bad = [q for q in question_types if q not in ALL_QUESTION_TYPES]
  if bad or not question_types:
    raise ConfigError("question_types", tuple(question_types),
                      f"a non-empty subset of {ALL_QUESTION_TYPES}")


def _noisy_answers(rng: np.random.Generator, answer: str, alternatives: Sequence[str]
                   ) -> tuple[str, ...]:
  """Ten answers: ``answer`` with 0..3 replaced by a synonym or another answer of the type."""
  answers = [answer] * 10
  wrong = [a for a in alternatives if a != answer]
  for i in rng.choice(10, int(rng.integers(0, 4)), replace=False):
    synonym = _SYNONYMS.get(answer)
    if answer.isdigit():
      synonym = _NUMBER_WORDS[int(answer)]
    answers[int(i)] = synonym if synonym and rng.random() < 0.5 else str(rng.choice(wrong))
  return tuple(answers)


def make_sample(index: int, *, seed: int, image_size: int = 32, grid: int = 4,
                min_objects: int = 1, max_objects: int = 3,
                question_types: Sequence[str] = QUESTION_TYPES,
                mapping: dict[str, str] | None = None, label_by: str = "shape") -> VQASample:
  """Sample ``index`` of the split drawn with ``seed`` (``mapping`` for ``label`` questions)."""
  rng = np.random.default_rng([seed, index])
  n = int(rng.integers(min_objects, max_objects + 1))
  shapes = [SHAPES[i] for i in rng.choice(len(SHAPES), n, replace=False)]
  colors = [list(COLORS)[i] for i in rng.choice(len(COLORS), n, replace=False)]
  cells = [divmod(int(c), grid) for c in rng.choice(grid * grid, n, replace=False)]
  objects = tuple(SceneObject(s, c, r, k) for s, c, (r, k) in zip(shapes, colors, cells))
  qtype = str(question_types[int(rng.integers(len(question_types)))])
  target = objects[int(rng.integers(n))]
  label_class = None
  if qtype == "detail":  # numbers drawn after every other choice: other types draw as before
    marks = rng.integers(1, MAX_MARK + 1, n)
    objects = tuple(dataclasses.replace(o, mark=int(m)) for o, m in zip(objects, marks))
    target = objects[[o.color for o in objects].index(target.color)]
    question, answer = f"what number is on the {target.color} object?", str(target.mark)
    alternatives = [str(i) for i in range(1, MAX_MARK + 1)]
  elif qtype == "color":
    question, answer, alternatives = f"what color is the {target.shape}?", target.color, COLORS
  elif qtype == "shape":
    question, answer, alternatives = f"what shape is {target.color}?", target.shape, SHAPES
  elif qtype == "count":
    question, answer = "how many objects?", str(n)
    alternatives = [str(i) for i in range(min_objects, max_objects + 1)] + [str(max_objects + 1)]
  elif qtype == "position":
    question, answer = f"where is the {target.shape}?", position_word(target.row, target.col, grid)
    alternatives = sorted({position_word(r, k, grid) for r in range(grid) for k in range(grid)})
  else:
    mapping = mapping or label_mapping(0, label_by)
    label_class = target.shape if label_by == "shape" else f"{target.color} {target.shape}"
    question, answer = f"what is the label of the {target.shape}?", mapping[label_class]
    alternatives = sorted(set(mapping.values()))
  answers = _noisy_answers(rng, answer, list(alternatives))
  majority = Counter(answers).most_common(1)[0][0]
  cells_used = tuple((o.row, o.col) for o in objects) if qtype == "count" else (
      (target.row, target.col),)
  return VQASample(question_id=index * 1000, image_id=index,
                   image=render_scene(objects, image_size, grid), question=question,
                   answers=answers, answer=majority, question_type=qtype,
                   answer_type="number" if qtype in ("count", "detail") else "other",
                   objects=objects,
                   target_cells=cells_used, label_class=label_class)


def make_vqa_split(num: int, *, seed: int, image_size: int = 32, grid: int = 4,
                   min_objects: int = 1, max_objects: int = 3,
                   question_types: Sequence[str] = QUESTION_TYPES, label_seed: int = 0,
                   label_by: str = "shape", word_pool: int = 0) -> list[VQASample]:
  """``num`` samples; the same arguments give identical samples (sample i depends on (seed, i))."""
  _check(image_size, grid, min_objects, max_objects, question_types)
  mapping = label_mapping(label_seed, label_by, word_pool)
  return [make_sample(i, seed=seed, image_size=image_size, grid=grid, min_objects=min_objects,
                      max_objects=max_objects, question_types=question_types, mapping=mapping,
                      label_by=label_by) for i in range(num)]


def write_vqa_folder(samples: Sequence[VQASample], root: str, split: str = "val2014") -> None:
  """Writes ``root/questions.json``, ``root/annotations.json`` and ``root/images/*.png`` in the
  VQAv2 / OK-VQA layout (each file atomically)."""
  from PIL import Image
  os.makedirs(os.path.join(root, "images"), exist_ok=True)
  for s in samples:
    with io.atomic_open(os.path.join(root, "images", coco_file_name(split, s.image_id, "png")),
                        "wb") as f:
      Image.fromarray(s.image).save(f, format="PNG")
  questions = [{"image_id": s.image_id, "question": s.question, "question_id": s.question_id}
               for s in samples]
  annotations = [{
      "question_id": s.question_id, "image_id": s.image_id, "question_type": s.question_type,
      "answer_type": s.answer_type, "multiple_choice_answer": s.answer,
      "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1}
                  for k, a in enumerate(s.answers)]} for s in samples]
  common = {"info": {"description": "jaxvlm synthetic VQA"}, "license": {},
            "data_type": "mscoco", "data_subtype": split}
  io.write_json(os.path.join(root, "questions.json"),
                {**common, "task_type": "Open-Ended", "questions": questions})
  io.write_json(os.path.join(root, "annotations.json"), {**common, "annotations": annotations})
