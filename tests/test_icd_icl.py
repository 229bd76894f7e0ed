"""ICD ICL on a tiny real-format Qwen2.5-VL folder through the shared input path: the runner's
answers equal ``chat_batch`` and its InfoScore log-probabilities an un-jitted forward on the
processor's batch (cached, bucketed features change nothing), results in the layout
``jaxvlm compare-indices`` reads, the synthetic ICL episodes, and bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from jaxvlm.config import load_config
from jaxvlm.data import vlm_inputs
from jaxvlm.errors import ConfigError, JaxVLMError, MissingFileError, ShapeError
from jaxvlm.methods import icd
from jaxvlm.methods.icd import icl
from jaxvlm.models import tiny
from jaxvlm.models.chat import chat_batch, load_vlm
from jaxvlm.run import experiment_module
from jaxvlm.tools import compare_indices

# compile-bound (tiny shapes, eager ops): XLA's cheap compile mode (conftest)
pytestmark = pytest.mark.usefixtures("fast_compile")

DATA = ConfigDict(dict(image_size=32, grid=4, max_objects=3, label_by="shape", word_pool=8,
                       num_train=40, train_seed=0, label_seed=0, max_shots=3,
                       same_class_prob=1.0))
FMT = icd.PromptFormat(system="Answer with one word.")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  samples = icl.label_split(DATA, 6, seed=3, label_seed=1)
  folder = str(tmp_path_factory.mktemp("qwen_icl"))
  tiny.write_tiny_vlm_folder("qwen2_5_vl", folder, icl.tokenizer_texts(samples, FMT), seed=0)
  model, processor = load_vlm(folder)
  return model, processor, samples


def test_runner_answers_equal_chat_batch(setup):
  model, processor, samples = setup
  queries, shots = samples[:3], [[samples[3]], [samples[4], samples[5]], [samples[5]]]
  runner = icd.VLMRunner(model, processor, FMT, batch_size=2, feature_bucket=64)
  ours = runner.answers(queries, shots, max_new_tokens=4)
  ref = chat_batch(model, processor, [FMT.conversation(q, d) for q, d in zip(queries, shots)],
                   4)
  assert ours == [r.split("\n")[0].strip() for r in ref]


def test_runner_answer_logp_equals_a_plain_forward(setup):
  model, processor, samples = setup
  queries, shots = samples[:2], [[samples[2], samples[3]], [samples[4]]]
  runner = icd.VLMRunner(model, processor, FMT, batch_size=4, feature_bucket=128)
  ours = runner.answer_logp(queries, shots)
  for q, d, value in zip(queries, shots, ours):
    batch = vlm_inputs.encode(processor, [FMT.conversation(q, d, answer=q.answer)],
                              add_generation_prompt=False)
    mask = icd.answer_token_mask(processor.tokenizer, batch["input_ids"],
                                 [[FMT.text(q, q.answer)]], [[q.answer]])
    logits = model(**vlm_inputs.model_kwargs(model, batch)).logits[0, :-1]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    tok = np.take_along_axis(np.asarray(logp), batch["input_ids"][0, 1:, None], -1)[:, 0]
    m = mask[0, 1:]
    assert m.sum() >= 1
    np.testing.assert_allclose(value, (tok * m).sum() / m.sum(), rtol=1e-4, atol=1e-5)
  probs = icl.answer_prob_fn(runner, queries, samples)(np.array([1, 0]),
                                                       np.array([[4], [2]]))
  np.testing.assert_allclose(np.log(probs), runner.answer_logp(
      [queries[1], queries[0]], [[samples[4]], [samples[2]]]), rtol=1e-5)


def test_icl_results_in_compare_indices_layout(setup, tmp_path):
  model, processor, samples = setup
  runner = icd.VLMRunner(model, processor, FMT, batch_size=2)
  queries, pool = samples[:2], samples[2:]
  idx = {1: np.array([[0], [3]]), 2: np.array([[1, 0], [2, 3]])}
  results = {s: icl.icl_inference(runner, queries, pool, i, max_new_tokens=3)
             for s, i in idx.items()}
  metrics = icl.write_icl_results(str(tmp_path), queries, results, idx, {"selection": "x"})
  assert set(metrics["shots"]) == {"1", "2"} and metrics["selection"] == "x"
  for s, i in idx.items():
    sel = compare_indices.load_selections(icl.predictions_path(str(tmp_path), s))
    assert sel == {str(q.question_id): row.tolist() for q, row in zip(queries, i)}
    r = results[s]
    assert r["accuracy"] == pytest.approx(np.mean(r["scores"]))
  reward = icl.reward_fn(runner, queries, pool, max_new_tokens=3)(np.array([1, 0]), idx[2][::-1])
  np.testing.assert_allclose(reward, [e + a for e, a in zip(results[2]["exact"][::-1],
                                                            results[2]["scores"][::-1])])


def test_exact_match_uses_the_official_normalisation():
  assert icd.exact_match("Two dogs.", "2 dogs") == 1.0
  assert icd.exact_match("the Umbrella", "umbrella") == 1.0
  assert icd.exact_match("umbrellas", "umbrella") == 0.0


def test_episodes_hold_a_same_class_demo_and_are_seeded(setup):
  model, processor, _ = setup
  c = ConfigDict(dict(data=DATA, train=dict(batch_size=3)))
  factory = icl.episode_batch_factory(c, processor, model, FMT)
  first, second = next(factory(0, 0)), next(factory(0, 1))
  again = next(factory(0, 1))
  for k in second:
    np.testing.assert_array_equal(second[k], again[k])
  assert first["pixel_values"].shape[1] == 2 and second["pixel_values"].shape[1] == 3
  tok = processor.tokenizer
  im_end = tok.convert_tokens_to_ids("<|im_end|>")
  for row, loss in zip(second["input_ids"], second["loss_mask"].astype(bool)):
    keep = loss & (row != im_end)
    starts = np.nonzero(keep & ~np.roll(keep, 1))[0]
    ends = np.nonzero(keep & ~np.roll(keep, -1))[0]
    answers = [tok.decode(row[a:b + 1].tolist()).lstrip(":") for a, b in zip(starts, ends)]
    query_answer = answers[-1]
    assert query_answer in answers[:-1]  # the same-class demo holds the episode's word
    assert len(answers) == 3  # two demonstration answers and the assistant answer


def test_bad_input_names_the_field(setup, tmp_path):
  model, processor, samples = setup
  with pytest.raises(ConfigError, match="shots"):
    icl.check_icd_indices(np.zeros((2, 0), int), 2, 4)
  with pytest.raises(ConfigError, match="shots"):
    icl.check_icd_indices(np.zeros((2, 5), int), 2, 4)
  with pytest.raises(ConfigError, match="icd_indices"):
    icl.check_icd_indices(np.array([[0], [4]]), 2, 4)
  runner = icd.VLMRunner(model, processor, FMT, batch_size=2)
  with pytest.raises(ShapeError, match="icd_indices"):
    icl.icl_inference(runner, samples[:2], samples[2:], np.zeros((3, 1), int))
  validate = experiment_module("kl_beta_compare").validate
  for key, value, field in (("compare.kl_betas", "(0.12,-0.1)", "kl_beta"),
                            ("compare.shots", "(1,17)", "compare.shots"),
                            ("compare.shots", "(0,1)", "compare.shots"),
                            ("compare.epochs", "(3,99)", "compare.epochs"),
                            ("compare.index_shots", "0", "compare.index_shots"),
                            ("train.adaptive_kl.band", "(0.2,0.1)", "train.adaptive_kl.band"),
                            ("train.grpo_mode", "online", "train.grpo_mode"),
                            ("prompt.template", "Q:{question}", "prompt.template")):
    c = load_config("configs/icd.py:tiny", [f"{key}={value}"])
    with pytest.raises(JaxVLMError, match=field):
      validate(c)
  validate(load_config("configs/icd.py:tiny"))
  c = load_config("configs/icd.py:tiny", ["data.source=vqa", f"data.pool_questions={tmp_path}/q"])
  with pytest.raises(MissingFileError, match="data.pool_questions"):
    validate(c)
