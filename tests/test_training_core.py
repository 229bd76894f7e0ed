"""Optimiser schedules and masks, gradient accumulation, remat, SFT data and GSM8K answers."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

from jaxvlm.data import arithmetic, sft
from jaxvlm.data.tokenizer import CharTokenizer
from jaxvlm.errors import ConfigError
from jaxvlm.eval.gsm8k import exact_match, extract_answer
from jaxvlm.training import make_schedule, remat_modules
from jaxvlm.training.optim import make_optimizer
from training_helpers import make_trainer, tiny_llama


def test_schedules_warm_up_then_decay():
  cos = make_schedule({"lr": 1.0, "warmup_steps": 10, "schedule": "cosine", "end_lr_ratio": 0.1},
                      110)
  assert float(cos(0)) == 0.0 and float(cos(5)) == pytest.approx(0.5)
  assert float(cos(10)) == pytest.approx(1.0) and float(cos(60)) == pytest.approx(0.55)
  assert float(cos(110)) == pytest.approx(0.1)
  lin = make_schedule({"lr": 2.0, "schedule": "linear"}, 100)
  assert float(lin(50)) == pytest.approx(1.0)
  with pytest.raises(ConfigError, match="optimizer.schedule"):
    make_schedule({"lr": 1.0, "schedule": "step"}, 10)


def test_weight_decay_skips_vectors_and_clipping_applies():
  tx = make_optimizer({"lr": 0.1, "schedule": "constant", "weight_decay": 0.5, "grad_clip": 1.0},
                      10)
  params = {"w": np.ones((2, 2), np.float32), "norm": np.ones(2, np.float32)}
  zero = jax.tree.map(np.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  np.testing.assert_allclose(updates["w"], -0.05)  # -lr * wd * w
  np.testing.assert_allclose(updates["norm"], 0.0)
  huge = jax.tree.map(lambda p: 1e6 * np.ones_like(p), params)
  clipped = optax.clip_by_global_norm(1.0).update(huge, None)[0]
  assert float(optax.tree.norm(clipped)) == pytest.approx(1.0, rel=1e-5)


def test_grad_accumulation_and_remat_match_plain_step():
  batch = next(make_trainer(tiny_llama()).batches(0, 0))
  plain = make_trainer(tiny_llama())
  loss = float(plain.train_step(batch)["loss"])
  model = tiny_llama()
  assert remat_modules(model, r"layers\.\d+$") == 2
  for trainer in (make_trainer(tiny_llama(), grad_accum=4), make_trainer(model)):
    np.testing.assert_allclose(float(trainer.train_step(batch)["loss"]), loss, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 trainer.params, plain.params)


def test_arithmetic_answers_and_splits():
  assert arithmetic.solve(47, 85) == "7+5=12 4+8+1=13 #### 132"
  train, test = arithmetic.make_splits(2, 500, 50, seed=3)
  assert not {e["question"] for e in train} & {e["question"] for e in test}
  for e in train[:50]:
    a, b = map(int, e["question"].split("+"))
    assert extract_answer(e["answer"]) == str(a + b)


def test_sft_batches_mask_answers_and_are_deterministic():
  tok = CharTokenizer()
  example = {"question": "12+34", "answer": "2+4=6 1+3=4 #### 46"}
  row = sft.encode_example(tok, example, 48)
  prompt_len = 1 + len(sft.prompt_text("12+34"))
  assert row["loss_mask"].sum() == len(example["answer"]) + 1 and row["loss_mask"][prompt_len] == 1
  assert tok.decode(row["input_ids"][prompt_len:]) == example["answer"]
  data = sft.encode_all(tok, arithmetic.make_splits(2, 40, 0)[0], 48)
  factory = sft.batch_factory(data, 16)
  run = [b["input_ids"] for b, _ in zip(factory(7, 0), range(5))]
  resumed = [b["input_ids"] for b, _ in zip(factory(7, 3), range(2))]
  np.testing.assert_array_equal(run[3], resumed[0])
  np.testing.assert_array_equal(run[4], resumed[1])
  epoch0 = np.concatenate([run[0], run[1], run[2][:8]])
  assert len({r.tobytes() for r in epoch0}) == 40  # one epoch visits every example once


def test_extract_answer_conventions():
  assert extract_answer("so 3 + 4 = 7\n#### 1,234") == "1234"
  assert extract_answer("The answer is: 42.") == "42"
  assert extract_answer("last 5 then 6.0") == "6"
  assert extract_answer("no digits") is None
  assert exact_match("... #### 7", "x #### 7.00") and not exact_match("none", "#### 7")
