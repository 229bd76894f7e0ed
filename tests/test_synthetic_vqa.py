"""Synthetic VQA generator: determinism, rendering layout, answers, target cells, label mapping."""

import numpy as np
import pytest

from jaxvlm.data import synthetic_vqa as sv
from jaxvlm.data.tokenizer import ALPHABET, CharTokenizer
from jaxvlm.errors import ConfigError
from jaxvlm.eval import vqa_accuracy


@pytest.fixture(scope="module")
def split():
  return sv.make_vqa_split(150, seed=3, image_size=32, grid=4, max_objects=3)


def _fields(s):
  return (s.question_id, s.image_id, s.image.tobytes(), s.question, s.answers, s.answer,
          s.question_type, s.answer_type, s.objects, s.target_cells, s.label_class)


def test_same_seed_same_samples_and_prefix(split):
  again = sv.make_vqa_split(150, seed=3)
  assert [_fields(a) for a in split] == [_fields(b) for b in again]
  assert [_fields(a) for a in sv.make_vqa_split(20, seed=3)] == [_fields(a) for a in split[:20]]
  other = sv.make_vqa_split(150, seed=4)
  assert sum(_fields(a) != _fields(b) for a, b in zip(split, other)) > 140


def test_every_question_type_and_object_count_occurs(split):
  assert {s.question_type for s in split} == set(sv.QUESTION_TYPES)
  assert {len(s.objects) for s in split} == {1, 2, 3}
  assert len({s.question_id for s in split}) == len(split)


def test_rendering_layout(split):
  """Each object's cell holds exactly its shape mask in its color; everything else is background."""
  for s in split[:40]:
    assert s.image.shape == (32, 32, 3) and s.image.dtype == np.uint8
    expected = np.broadcast_to(np.asarray(sv.BACKGROUND, np.uint8), (32, 32, 3)).copy()
    for o in s.objects:
      cell = expected[o.row * 8:(o.row + 1) * 8, o.col * 8:(o.col + 1) * 8]
      cell[sv.shape_mask(o.shape, 8)] = sv.COLORS[o.color]
    np.testing.assert_array_equal(s.image, expected)
    shapes, colors, cells = ([o.shape for o in s.objects], [o.color for o in s.objects],
                             [(o.row, o.col) for o in s.objects])
    assert len(set(shapes)) == len(set(colors)) == len(set(cells)) == len(s.objects)


def test_shape_masks_differ_and_fit_cells():
  masks = {name: sv.shape_mask(name, 8) for name in sv.SHAPES}
  for a in sv.SHAPES:
    assert 8 <= masks[a].sum() < 64
    for b in sv.SHAPES:
      assert a == b or (masks[a] != masks[b]).any()


def _true_answer(s, mapping):
  """The answer recomputed from the scene and the question text."""
  by_shape = {o.shape: o for o in s.objects}
  by_color = {o.color: o for o in s.objects}
  last = s.question.rstrip("?").split()[-1]
  if s.question_type == "color":
    return by_shape[last].color, by_shape[last]
  if s.question_type == "shape":
    return by_color[last].shape, by_color[last]
  if s.question_type == "count":
    return str(len(s.objects)), None
  o = by_shape[last]
  if s.question_type == "position":
    return f"{'top' if o.row < 2 else 'bottom'} {'left' if o.col < 2 else 'right'}", o
  return mapping[o.shape], o


def test_answers_and_target_cells(split):
  mapping = sv.label_mapping(0)
  noisy = 0
  for s in split:
    answer, target = _true_answer(s, mapping)
    assert s.answer == answer and len(s.answers) == 10 and s.answers.count(answer) >= 7
    noisy += s.answers.count(answer) < 10
    assert vqa_accuracy(s.answer, s.answers) == 1.0
    if target is None:
      assert sorted(s.target_cells) == sorted((o.row, o.col) for o in s.objects)
    else:
      assert s.target_cells == ((target.row, target.col),)
    assert s.answer_type == ("number" if s.question_type == "count" else "other")
    assert s.label_class == (target.shape if s.question_type == "label" else None)
  assert 0.3 * len(split) < noisy < len(split)
  # a minority annotator answer scores below 1 (min(#matches / 3, 1) is exercised)
  s = next(s for s in split if s.answers.count(s.answer) == 7)
  wrong = next(a for a in s.answers if a != s.answer)
  assert vqa_accuracy(wrong, s.answers) < 1.0


def test_text_in_tokenizer_alphabet(split):
  tok = CharTokenizer()
  for s in split:
    for text in (s.question, *s.answers):
      assert set(text) <= set(ALPHABET)
      assert tok.decode(tok.encode(text)) == text


def test_label_mapping_is_seeded():
  m0, m0b, m1 = sv.label_mapping(0), sv.label_mapping(0), sv.label_mapping(1)
  assert m0 == m0b and m0 != m1
  assert sorted(m0) == sorted(sv.SHAPES) and len(set(m0.values())) == len(m0)
  pairs = sv.label_mapping(5, "shape_color")
  assert len(pairs) == len(sv.SHAPES) * len(sv.COLORS) and len(set(pairs.values())) == len(pairs)
  a = sv.make_vqa_split(40, seed=0, question_types=("label",), label_seed=0)
  b = sv.make_vqa_split(40, seed=0, question_types=("label",), label_seed=1)
  assert [s.answer for s in a] == [m0[s.label_class] for s in a]
  assert [s.answer for s in b] == [m1[s.label_class] for s in b]
  assert [s.image.tobytes() for s in a] == [s.image.tobytes() for s in b]
  c = sv.make_vqa_split(40, seed=0, question_types=("label",), label_seed=5,
                        label_by="shape_color")
  for s in c:
    o = next(o for o in s.objects if o.shape == s.question.rstrip("?").split()[-1])
    assert s.label_class == f"{o.color} {o.shape}" and s.answer == pairs[s.label_class]


def test_odd_grid_positions_and_larger_images():
  assert sv.position_word(1, 1, 3) == "middle center"
  assert sv.position_word(0, 2, 3) == "top right"
  s = sv.make_vqa_split(5, seed=0, image_size=48, grid=3, max_objects=5)
  assert s[0].image.shape == (48, 48, 3)


@pytest.mark.parametrize("kwargs, field", [
    (dict(question_types=("colour",)), "question_types"),
    (dict(max_objects=6), "max_objects"),
    (dict(min_objects=0), "max_objects"),
    (dict(image_size=12, grid=4), "image_size"),
    (dict(label_by="color"), "label_by"),
])
def test_bad_options(kwargs, field):
  with pytest.raises(ConfigError, match=field):
    sv.make_vqa_split(3, seed=0, **kwargs)
