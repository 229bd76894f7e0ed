"""KAVA data: the GSM8K-family readers on real-format fixtures, multi-operand arithmetic, and
fixed-slot encoding with its errors."""

from __future__ import annotations

import os

import numpy as np
import pytest

from jaxvlm.data import arithmetic, gsm8k
from jaxvlm.data.tokenizer import CharTokenizer
from jaxvlm.errors import ConfigError
from jaxvlm.eval.gsm8k import extract_answer
from jaxvlm.methods import kava

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "gsm8k")


def test_readers_on_published_formats():
  aug = gsm8k.read_aug(os.path.join(FIX, "aug.jsonl"))
  single = gsm8k.read_aug(os.path.join(FIX, "aug_single.jsonl"))
  assert aug[0] == single[0] and aug[0]["answer"] == "360"
  assert aug[0]["cot"].startswith("<<600*30/100=180>>") and single[1]["answer"] == "2400"
  assert gsm8k.read_aug(os.path.join(FIX, "aug_nl.jsonl"))[0]["cot"].startswith("600 x 30")
  test = gsm8k.read_gsm8k_test(os.path.join(FIX, "test.jsonl"))
  assert [r["answer"] for r in test] == ["18", "3"] and "<<16-3-4=9>>" in test[0]["cot"]
  assert [r["answer"] for r in gsm8k.read_gsm_hard(os.path.join(FIX, "gsmhard.jsonl"))] == [
      "-9867630", "3431580"]
  svamp = gsm8k.read_svamp(os.path.join(FIX, "SVAMP.json"))
  assert svamp[0]["answer"] == "51" and svamp[0]["question"].endswith("buy each pack?")
  assert [r["answer"] for r in gsm8k.read_multiarith(os.path.join(FIX, "MultiArith.json"))] == [
      "39", "8"]


def test_row_without_marker_is_an_error():
  with pytest.raises(ConfigError, match="aug_no_marker.jsonl:1.answer"):
    gsm8k.read_aug(os.path.join(FIX, "aug_no_marker.jsonl"))
  with pytest.raises(ConfigError, match=r"examples\[0\].answer"):
    kava.encode(CharTokenizer(), [{"question": "1+1", "answer": "2"}], q_len=8, cot_len=8,
                ans_len=8, question_template="{question}=", answer_prefix="####")


def test_multistep_arithmetic_is_correct_and_disjoint():
  train, test = arithmetic.make_multistep_splits(300, 50, 4, 9, seed=1)
  assert not {e["question"] for e in train} & {e["question"] for e in test}
  for e in train[:100]:
    assert extract_answer(e["answer"]) == str(eval(e["question"]))  # noqa: S307
    assert len(e["answer"].split("####")[0].split()) == 3  # one step per operation
  assert arithmetic.solve_chain([3, 4, 5, 2], ["*", "+", "-"]) == "3*4=12 12+5=17 17-2=15 #### 15"


def test_multistep_arithmetic_modulo_with_mixed_operations():
  train, test = arithmetic.make_multistep_splits(300, 50, 4, 9, seed=1, ops="+-*", modulus=10)
  assert not {e["question"] for e in train} & {e["question"] for e in test}
  assert {c for e in train for c in e["question"] if not c.isdigit()} == set("+-*")
  for e in train[:100]:
    value, steps = None, e["answer"].split("####")[0].split()
    for step in steps:  # left to right, every step modulo 10
      lhs, rhs = step.split("=")
      value = eval(lhs) % 10  # noqa: S307
      assert rhs == str(value)
    assert len(steps) == 3 and extract_answer(e["answer"]) == str(value)
  assert arithmetic.solve_chain([7, 1, 2, 7], ["*", "+", "*"], 10) == "7*1=7 7+2=9 9*7=3 #### 3"
  with pytest.raises(ValueError, match="ops"):
    arithmetic.make_multistep_splits(10, 2, ops="/")


def test_encode_slots_and_budget_error():
  tok = CharTokenizer()
  ex = [{"question": "3*4+5-2", "cot": "3*4=12 12+5=17 17-2=15", "answer": "15"}]
  fmt = dict(question_template="{question}=", answer_prefix="####")
  need = kava.lengths_needed(tok, ex, **fmt)
  assert need == {"q_len": 9, "cot_len": 23, "ans_len": 8}
  b = kava.encode(tok, ex, q_len=11, cot_len=25, ans_len=9, **fmt)
  assert b["q_mask"][0].tolist() == [0, 0] + [1] * 9 and b["q_ids"][0, 2] == tok.bos_token_id
  assert tok.decode(b["cot_ids"][0]) == "3*4=12 12+5=17 17-2=15 "
  assert tok.decode(b["ans_ids"][0]) == "#### 15" and b["ans_loss"][0].tolist() == [0] * 4 + [1] * 4 + [0]
  with pytest.raises(ConfigError, match="data.cot_len"):
    kava.encode(tok, ex, q_len=11, cot_len=10, ans_len=9, **fmt)
  with pytest.raises(ConfigError, match="tokens.bot"):
    kava.special_token_id(tok, "<bot>", "tokens.bot")
  assert np.all(b["cot_mask"][0, :23] == 1)
