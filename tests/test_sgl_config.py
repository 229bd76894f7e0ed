"""SGL config checks run before any work (each error names the full key), the ``detail``
question type of the tiny preset (a number drawn inside one object, asked by its colour; other
types unchanged), and ``min_new_tokens`` (SGL's generation config) in ``generate``."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxvlm.config import load_config
from jaxvlm.data import synthetic_vqa
from jaxvlm.errors import ConfigError
from jaxvlm.generation import generate
from jaxvlm.models.llama.modeling import LlamaConfig, LlamaForCausalLM
from jaxvlm.run import experiment_module

EXP = experiment_module("shared_vision")


@pytest.mark.parametrize("key, value", [
    ("data.max_num", 0), ("data.source", "coco"), ("shared_vision", "always"),
    ("attention_impl", "flash"),
    ("sgl.prune_ratio", 0.0), ("sgl.prune_layer", 1.0), ("sgl.consistency_token_ratio", 1.5),
    ("sgl.selection", "top"), ("runs.keeps", "0.4,1.2"), ("runs.selections", "guide,best"),
    ("runs.guide_modes", "baseline,long_cot"), ("runs.batch_size", 0),
    ("data.test_question_types", ("detail", "colour")), ("data.limit", -1),
    ("decoder.drop_keep_ratios", "1.0,0"), ("sgl.min_new_tokens", 99)])
def test_bad_settings_name_the_key(key, value):
  c = load_config("configs/sgl.py:tiny")
  node, leaf = c, key.split(".")
  for part in leaf[:-1]:
    node = node[part]
  node[leaf[-1]] = value
  with pytest.raises(ConfigError, match=leaf[-1]):
    EXP.validate(c)


def test_real_preset_needs_its_data_files():
  c = load_config("configs/sgl.py:internvl2_2b_8b")
  EXP.validate(c)
  c.data.annotations = ""
  with pytest.raises(ConfigError, match="data.annotations"):
    EXP.validate(c)


def test_detail_questions():
  samples = synthetic_vqa.make_vqa_split(40, seed=3, question_types=("detail",))
  for s in samples:
    target = next(o for o in s.objects if o.color in s.question)
    assert s.question == f"what number is on the {target.color} object?"
    assert s.answer == str(target.mark) and all(1 <= o.mark <= 4 for o in s.objects)
    assert s.target_cells == ((target.row, target.col),) and s.answer_type == "number"
    r0, c0 = 8 * target.row, 8 * target.col
    cell = s.image[r0:r0 + 8, c0:c0 + 8]
    white = (cell == 255).all(-1)
    np.testing.assert_array_equal(white, synthetic_vqa.mark_mask(target.mark, 8))
  plain = synthetic_vqa.make_vqa_split(20, seed=3)
  again = synthetic_vqa.make_vqa_split(20, seed=3, question_types=synthetic_vqa.QUESTION_TYPES)
  assert all(np.array_equal(a.image, b.image) and a.question == b.question
             for a, b in zip(plain, again))
  assert all(o.mark == 0 for s in plain for o in s.objects)
  with pytest.raises(ConfigError, match="question_types"):
    synthetic_vqa.make_vqa_split(2, seed=0, question_types=("digits",))


def test_min_new_tokens_keeps_eos_out_of_the_first_tokens():
  lm = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=1, num_attention_heads=2,
                                    num_key_value_heads=1, head_dim=16), rngs=nnx.Rngs(0))
  ids = jnp.asarray([[3, 4, 5], [6, 7, 8]])
  first = np.asarray(generate(lm, ids, max_new_tokens=1, eos_token_id=()).new_tokens[:, 0])
  eos = int(first[0])  # the first row's greedy first token made EOS
  plain = generate(lm, ids, max_new_tokens=4, eos_token_id=eos)
  assert int(plain.num_generated[0]) == 1
  forced = generate(lm, ids, max_new_tokens=4, eos_token_id=eos, min_new_tokens=1)
  logits = np.array(lm(ids).logits[:, -1])
  logits[:, eos] = -np.inf
  assert int(forced.new_tokens[0, 0]) == int(np.argmax(logits[0])) != eos
  assert int(forced.num_generated[0]) >= 2
  with pytest.raises(ConfigError, match="min_new_tokens"):
    generate(lm, ids, max_new_tokens=2, min_new_tokens=3)
