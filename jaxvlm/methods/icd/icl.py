"""Multi-shot in-context learning (ICL) with a VLM: the ICD method's reward, InfoScore and task.

Prompts are the interleaved multi-image ICL prompts of :mod:`jaxvlm.data.vlm_batches` (each shot:
image, question, answer; then the query image and question), for Qwen2.5-VL with the real M-RoPE
positions of every image (computed on the host, the forward jit-compiled), answered greedily by
the one :func:`jaxvlm.generation.generate` through :func:`jaxvlm.training.vlm.evaluate_vqa`.

* :func:`icl_inference` — answers of ``queries`` with the pool demonstrations ``icd_indices
  [N, S]`` and their official VQA accuracy; :func:`write_icl_results` writes ``predictions.json``
  (per sample: question id, prediction, accuracy, chosen ICD indices; the record layout
  ``jaxvlm compare-indices`` reads) and ``metrics.json`` (accuracy per shot).
* :func:`answer_prob_fn` — ``P(y | x, ICDs)`` of the reference answer (product of the answer and
  ``<eos>`` token probabilities, teacher forced), batched and jit-compiled: the ``prob_fn`` of
  :func:`jaxvlm.methods.icd.beam_search` (InfoScore = its increase when one ICD is added).
* :func:`reward_fn` — GRPO reward of chosen ICDs: exact match + VQA accuracy of the VLM's answer.
* :class:`HFTextTokenizer` — a real checkpoint's HF tokenizer for the same prompts.
* The synthetic ICD task: ``label`` questions whose word comes from a per-episode class -> word
  mapping (:func:`jaxvlm.data.synthetic_vqa.label_mapping` with a small ``word_pool``), so only a
  same-class demonstration reveals the answer. :func:`episode_batch_factory` is the
  ``train_tiny_vlm`` ``batch_fn`` that teaches a tiny VLM to copy it (episodes of 1..``max_shots``
  shots, a fresh mapping per episode, a same-class shot at a random place with probability
  ``same_class_prob``); :func:`label_split` draws the samples of one fixed mapping.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jaxvlm import io
from jaxvlm.data import synthetic_vqa, vlm_batches
from jaxvlm.data.tokenizer import CharTokenizer
from jaxvlm.errors import ConfigError, ShapeError
from jaxvlm.eval import vqa_accuracy
from jaxvlm.methods.icd.policy import check_shots
from jaxvlm.training.vlm import evaluate_vqa


def check_icd_indices(icd_indices, num_queries: int, pool_size: int) -> np.ndarray:
  """``[num_queries, S]`` integer pool indices with ``S >= 1`` (else ``ShapeError`` /
  ``ConfigError``)."""
  idx = np.asarray(icd_indices)
  if idx.ndim != 2 or idx.shape[0] != num_queries:
    raise ShapeError("icd_indices", idx.shape, f"[{num_queries} queries, shots]")
  check_shots(idx.shape[1], pool_size)
  if idx.size and (idx.min() < 0 or idx.max() >= pool_size):
    raise ConfigError("icd_indices", f"range [{idx.min()}, {idx.max()}]",
                      f"pool indices in [0, {pool_size - 1}]")
  return idx.astype(np.int64)


def _shots(pool: Sequence[Any], icd_indices: np.ndarray) -> list[list[Any]]:
  return [[pool[int(i)] for i in row] for row in icd_indices]


def icl_inference(model, tokenizer: CharTokenizer, queries: Sequence[Any], pool: Sequence[Any],
                  icd_indices, *, batch_size: int = 64, max_new_tokens: int = 8) -> dict:
  """Greedy answers of ``queries`` with demonstrations ``pool[icd_indices[i]]`` (in order):
  ``accuracy`` / ``exact_match`` (means) and per sample ``predictions``, ``scores`` (VQA
  accuracy), ``exact`` (prediction == majority answer)."""
  idx = check_icd_indices(icd_indices, len(queries), len(pool))
  r = evaluate_vqa(model, tokenizer, queries, shots=_shots(pool, idx), batch_size=batch_size,
                   max_new_tokens=max_new_tokens)
  scores = [vqa_accuracy(p, q.answers) for p, q in zip(r["predictions"], queries)]
  exact = [float(p == q.answer) for p, q in zip(r["predictions"], queries)]
  return {"accuracy": r["accuracy"], "exact_match": r["exact_match"],
          "predictions": r["predictions"], "scores": scores, "exact": exact}


def reward_fn(model, tokenizer: CharTokenizer, queries: Sequence[Any], pool: Sequence[Any], *,
              batch_size: int = 64, max_new_tokens: int = 8):
  """``fn(query_rows [M], icd_indices [M, S]) -> [M]``: exact match + VQA accuracy of the answer
  to ``queries[row]`` with those ICDs (the Lever-Plus GRPO reward, in [0, 2])."""
  def fn(rows, icd_indices):
    r = icl_inference(model, tokenizer, [queries[int(i)] for i in rows], pool, icd_indices,
                      batch_size=batch_size, max_new_tokens=max_new_tokens)
    return np.asarray(r["exact"], np.float32) + np.asarray(r["scores"], np.float32)
  return fn


def write_icl_results(out_dir: str, queries: Sequence[Any], results: dict[int, dict],
                      icd_indices: dict[int, np.ndarray], meta: dict | None = None) -> dict:
  """``out_dir/shot<S>/predictions.json`` per shot count S (records: ``question_id``,
  ``question``, ``prediction``, ``accuracy``, ``exact_match``, ``icd_indices``) and
  ``out_dir/metrics.json`` (``{"shots": {S: {"accuracy", "exact_match"}}, **meta}``)."""
  for s, r in results.items():
    records = [{"question_id": int(q.question_id), "question": q.question, "prediction": p,
                "accuracy": a, "exact_match": bool(e), "icd_indices": [int(i) for i in idx]}
               for q, p, a, e, idx in zip(queries, r["predictions"], r["scores"], r["exact"],
                                          icd_indices[s])]
    io.write_json(os.path.join(out_dir, f"shot{s}", "predictions.json"), records)
  metrics = {"shots": {str(s): {"accuracy": r["accuracy"], "exact_match": r["exact_match"]}
                       for s, r in results.items()}, **(meta or {})}
  io.write_json(os.path.join(out_dir, "metrics.json"), metrics)
  return metrics


def predictions_path(out_dir: str, shots: int) -> str:
  """The ``predictions.json`` of ``shots`` written by :func:`write_icl_results`."""
  return os.path.join(out_dir, f"shot{shots}", "predictions.json")


class HFTextTokenizer:
  """A HF tokenizer (e.g. Qwen2.5-VL's) behind the char tokenizer's interface that the ICL
  prompts use: the same plain interleaved few-shot prompt (no chat template); ``encode`` adds no
  special tokens; BOS is the tokenizer's, else its pad token (Qwen's ``<|endoftext|>``, the
  document separator); ``decode`` drops special tokens and ends the answer at the first newline,
  as every demonstration's answer ends."""

  def __init__(self, tokenizer):
    self.tokenizer = tokenizer
    self.eos_token_id = tokenizer.eos_token_id
    self.pad_token_id = (tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                         else tokenizer.eos_token_id)
    self.bos_token_id = (tokenizer.bos_token_id if tokenizer.bos_token_id is not None
                         else self.pad_token_id)

  @property
  def vocab_size(self) -> int:
    return len(self.tokenizer)

  def token_id(self, token: str) -> int:
    return self.tokenizer.convert_tokens_to_ids(token)

  def encode(self, text: str) -> list[int]:
    return self.tokenizer.encode(text, add_special_tokens=False)

  def decode(self, ids) -> str:
    return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True).split("\n")[0]


# ------------------------------------------------------------------------------ InfoScore


def icl_seq_len(fmt: vlm_batches.VLMPromptFormat, tokenizer: CharTokenizer,
                samples: Sequence[Any], shots: int) -> int:
  """A length that holds any query of ``samples`` with any ``shots`` of them + its answer."""
  def longest(text):
    return max(len(tokenizer.encode(text(s))) for s in samples)
  demo = len(fmt.image_ids()) + longest(lambda s: f"{s.question}\n{s.answer}\n")
  query = len(fmt.image_ids()) + longest(lambda s: f"{s.question}\n") + longest(
      lambda s: s.answer) + 1
  return 1 + shots * demo + query


@nnx.jit
def answer_logp(model, batch):
  """``[B]`` summed log-probability of the ``loss_mask`` tokens (answer + ``<eos>``) of a
  :func:`~jaxvlm.data.vlm_batches.build_vlm_batch` batch (token t predicted from t-1)."""
  logits = model(**vlm_batches.model_inputs(model, batch)).logits[:, :-1].astype(jnp.float32)
  logp = jax.nn.log_softmax(logits, axis=-1)
  ids = jnp.asarray(batch["input_ids"])[:, 1:]
  tok = jnp.take_along_axis(logp, ids[..., None], axis=-1)[..., 0]
  return jnp.sum(tok * jnp.asarray(batch["loss_mask"])[:, 1:], axis=-1)


def answer_prob_fn(model, tokenizer: CharTokenizer, queries: Sequence[Any], pool: Sequence[Any],
                   *, batch_size: int = 64):
  """``prob_fn(query_rows [M], icd_indices [M, S]) -> [M]`` = ``P(answer | query, ICDs)``:
  one jit-compiled forward per shot count (rows padded to ``batch_size``, prompts to
  :func:`icl_seq_len` over queries and pool)."""
  fmt = vlm_batches.VLMPromptFormat.from_model(
      model, tokenizer, vlm_batches.image_of(queries[0]).shape[0])
  everything = list(queries) + list(pool)

  def prob_fn(rows, icd_indices):
    rows = np.asarray(rows)
    idx = np.asarray(icd_indices).reshape(len(rows), -1)
    seq_len = icl_seq_len(fmt, tokenizer, everything, idx.shape[1])
    out = []
    for s in range(0, len(rows), batch_size):
      take = list(range(s, min(s + batch_size, len(rows))))
      take += [take[-1]] * (batch_size - len(take))
      batch = vlm_batches.build_vlm_batch(
          [queries[int(rows[i])] for i in take], tokenizer, model, seq_len=seq_len,
          shots=_shots(pool, idx[take]), fmt=fmt)
      out.append(np.asarray(answer_logp(model, batch))[:min(batch_size, len(rows) - s)])
    return np.exp(np.concatenate(out)) if out else np.zeros(0)
  return prob_fn


# ------------------------------------------------------------------------------ synthetic task


def label_split(data: ml_collections.ConfigDict, num: int, seed: int, label_seed: int) -> list:
  """``num`` ``label`` questions of one mapping (``label_seed``) as ``data`` describes them
  (``image_size``, ``grid``, ``max_objects``, ``label_by``, ``word_pool``)."""
  return synthetic_vqa.make_vqa_split(
      num, seed=seed, image_size=data.image_size, grid=data.grid, max_objects=data.max_objects,
      question_types=("label",), label_seed=label_seed, label_by=data.label_by,
      word_pool=data.word_pool)


def episode_batch_factory(config: ml_collections.ConfigDict, tokenizer: CharTokenizer, model):
  """``batch_fn`` of :func:`jaxvlm.training.vlm.train_tiny_vlm` for the ICL episodes of the
  module docstring: step ``t`` has ``1 + t % max_shots`` shots per row (one padded length per
  shot count), every row a fresh mapping; depends only on ``(seed, step)``."""
  d, batch_size = config.data, config.train.batch_size
  base = label_split(d, d.num_train, d.train_seed, d.label_seed)
  fmt = vlm_batches.VLMPromptFormat.from_model(model, tokenizer, d.image_size)
  classes = np.array([s.label_class for s in base])
  by_class = {c: np.nonzero(classes == c)[0] for c in set(classes)}
  lengths = {n: icl_seq_len(fmt, tokenizer, base, n) for n in range(1, d.max_shots + 1)}

  def factory(seed, start):
    step = start
    while True:
      rng = np.random.default_rng([seed, step])
      n = 1 + step % d.max_shots
      queries, shots = [], []
      for _ in range(batch_size):
        mapping = synthetic_vqa.label_mapping(int(rng.integers(2 ** 31)), d.label_by,
                                              d.word_pool)
        relabel = lambda s: dataclasses.replace(s, answer=mapping[s.label_class])
        idx = rng.choice(len(base), n + 1, replace=False)
        demos = [int(i) for i in idx[1:]]
        if rng.random() < d.same_class_prob:
          same = by_class[base[idx[0]].label_class]
          demos[int(rng.integers(n))] = int(same[rng.integers(len(same))])
        queries.append(relabel(base[idx[0]]))
        shots.append([relabel(base[i]) for i in demos])
      yield vlm_batches.build_vlm_batch(queries, tokenizer, model, seq_len=lengths[n],
                                        shots=shots, fmt=fmt)
      step += 1
  return factory


__all__ = ["HFTextTokenizer", "answer_logp", "answer_prob_fn", "check_icd_indices",
           "episode_batch_factory", "icl_inference", "icl_seq_len", "label_split",
           "predictions_path", "reward_fn", "write_icl_results"]
