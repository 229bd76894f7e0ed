"""KAVA bad input beyond ``test_kava_core``: M <= 0 and T < 1 at the pass and generation
functions, the config file's keys, unknown ablation rows / data source / projection, every segment
budget, and a GSM8K test row without ``####``: each a ``ConfigError`` naming the field."""

from __future__ import annotations

import numpy as np
import pytest

from jaxvlm.config import load_config
from jaxvlm.data import gsm8k
from jaxvlm.data.tokenizer import CharTokenizer
from jaxvlm.errors import ConfigError
from jaxvlm.methods import kava
from jaxvlm.run import experiment_module
from test_kava_core import random_batch, tiny_kava

BAD_LATENTS = [(dict(num_latents=0, iterations=1), "kava.num_latents"),
               (dict(num_latents=-1, iterations=1), "kava.num_latents"),
               (dict(num_latents=2, iterations=0), "kava.iterations"),
               (dict(num_latents=2, iterations=-1), "kava.iterations")]


@pytest.mark.parametrize("kwargs, field", BAD_LATENTS)
def test_passes_and_generation_refuse_bad_m_and_t(kwargs, field):
  model, batch = tiny_kava(), random_batch(np.random.default_rng(0))
  with pytest.raises(ConfigError, match=field):
    kava.student_forward(model, batch, **kwargs)
  with pytest.raises(ConfigError, match=field):
    kava.latent_generate(model, batch["q_ids"], batch["q_mask"], [5], max_new_tokens=2,
                         eos_token_id=1, **kwargs)


@pytest.mark.parametrize("override, field", [
    ("kava.num_latents=0", "kava.num_latents"), ("kava.num_latents=-3", "kava.num_latents"),
    ("kava.iterations=0", "kava.iterations"), ("kava.method=coconut", "kava.method"),
    ("kava.terms=student_ce,kl", "kava.terms"), ("kava.codi_distance=huber", "kava.codi_distance"),
    ("kava.kv_distance=cosine", "kava.kv_distance"), ("kava.select=snapkv", "kava.select"),
    ("kava.codi_offset=-1", "kava.codi_offset")])
def test_config_file_keys_are_checked(override, field):
  c = load_config("configs/kava.py:tiny", [f"--config.{override}"])
  with pytest.raises(ConfigError, match=field):
    experiment_module("kava_ablation").kava_settings(c)


def test_unknown_row_source_and_projection():
  exp = experiment_module("kava_ablation")
  c = load_config("configs/kava.py:tiny", ["--config.data.source=gsm9k"])
  with pytest.raises(ConfigError, match="ablation.rows"):
    exp.row_config(c, "coconut")
  with pytest.raises(ConfigError, match="data.source"):
    exp.load_data(c)
  with pytest.raises(ConfigError, match="kava.projection"):
    kava.KavaModel(tiny_kava().lm, "conv", 90, 91, 92)


@pytest.mark.parametrize("budget, field", [
    (dict(q_len=8), "data.q_len"), (dict(cot_len=22), "data.cot_len"),
    (dict(ans_len=7), "data.ans_len")])
def test_every_segment_budget_is_checked(budget, field):
  ex = [{"question": "3*4+5-2", "cot": "3*4=12 12+5=17 17-2=15", "answer": "15"}]
  lengths = {**dict(q_len=9, cot_len=23, ans_len=8), **budget}  # 9/23/8 is what fits
  with pytest.raises(ConfigError, match=field):
    kava.encode(CharTokenizer(), ex, **lengths, question_template="{question}=",
                answer_prefix="####")


def test_gsm8k_test_row_without_marker(tmp_path):
  path = tmp_path / "test.jsonl"
  path.write_text('{"question": "q1", "answer": "2+2=4 #### 4"}\n'
                  '{"question": "q2", "answer": "The answer is 5."}\n')
  with pytest.raises(ConfigError, match=r"test.jsonl:2.answer"):
    gsm8k.read_gsm8k_test(str(path))
