"""Multi-shot in-context learning (ICL) with Qwen2.5-VL: the ICD method's prompts, InfoScore
probabilities, answers and rewards, all through :func:`jaxvlm.data.vlm_inputs.encode`.

Prompts follow Lever-Plus's Qwen2.5-VL interface (``open_mmicl/interface/qwen2vl_interface.py``,
:class:`PromptFormat`): an optional system message, then ONE user message holding, per
demonstration, its image and ``template`` filled with its question and answer
(``Question:{question} Short answer:{answer}``), then the query image and the template with an
empty answer; the chat template's generation prompt follows. Every image keeps its own grid.

* :class:`VLMRunner` — the VLM side: ``answer_logp`` (InfoScore: the query's answer written
  exactly where a demonstration's answer stands, i.e. right after ``Short answer:`` inside the
  user turn, with no generation prompt; the score is the mean log-probability of the answer's
  tokens, ``P = exp(mean)`` as Lever-Plus's ``get_cond_prob``) and ``answers`` (greedy, equal to
  :func:`jaxvlm.models.chat.chat_batch`). Each distinct image is preprocessed and encoded by the
  vision tower once; batches take the cached features, padded to a bucket, so one compiled
  program serves every batch of similar length whatever the image sizes.
* :func:`icl_inference` / :func:`reward_fn` — answers with chosen ICDs, scored by the official
  VQA accuracy; the reward is exact match (official answer normalisation) + VQA accuracy.
* :func:`write_icl_results` — ``predictions.json`` per shot in the layout ``jaxvlm
  compare-indices`` reads, and ``metrics.json``.
* The synthetic ICD task: ``label`` questions whose word comes from a per-episode class -> word
  mapping, so only a same-class demonstration reveals the answer (:func:`label_split`).
  :func:`episode_batch_factory` is the :func:`jaxvlm.training.vlm.train_vlm` ``batch_fn`` that
  teaches a tiny Qwen2.5-VL to copy it, in the prompt layout above; its loss covers the assistant
  answer and every demonstration's answer tokens (the InfoScore position).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jaxvlm import frozen, io
from jaxvlm.data import images as image_lib, synthetic_vqa, vlm_inputs
from jaxvlm.errors import ConfigError, ShapeError
from jaxvlm.eval.vqa import normalize_answer, vqa_accuracy
from jaxvlm.eval.vqa_answers import image_of
from jaxvlm.generation import generate
from jaxvlm.generation.defaults import model_defaults
from jaxvlm.methods.icd.policy import check_shots

LEVER_PLUS_TEMPLATE = "Question:{question} Short answer:{answer}"


@dataclasses.dataclass(frozen=True)
class PromptFormat:
  """Lever-Plus's Qwen2.5-VL ICL layout (module docstring). ``template`` has ``{question}`` and
  ``{answer}``; ``system`` (may be empty: no system message)."""

  template: str = LEVER_PLUS_TEMPLATE
  system: str = ""

  def __post_init__(self):
    if not self.template.rstrip(" ").endswith("{answer}") or "{question}" not in self.template:
      raise ConfigError("prompt.template", self.template,
                        "a text with '{question}' that ends in '{answer}'")

  def text(self, sample, answer: str) -> str:
    """A text item: the template, stripped of outer spaces (as Lever-Plus strips items)."""
    return self.template.format(question=sample.question, answer=answer).strip(" ")

  def conversation(self, sample, shots: Sequence[Any] = (), answer: str | None = None
                   ) -> list[dict]:
    """Messages of ``sample`` after ``shots``; ``answer`` (InfoScore) fills the query's answer
    slot as a demonstration's is filled."""
    content = []
    for s in (*shots, sample):
      text = self.text(s, s.answer if s is not sample else (answer or ""))
      content += [{"type": "image", "image": image_of(s)}, {"type": "text", "text": text}]
    messages = [{"role": "system", "content": self.system}] if self.system else []
    return messages + [{"role": "user", "content": content}]


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


def _find_last(row: np.ndarray, sub: Sequence[int], end: int) -> int:
  """Start of the last occurrence of ``sub`` in ``row[:end]``, or -1."""
  n = len(sub)
  for start in range(end - n, -1, -1):
    if row[start] == sub[0] and np.array_equal(row[start:start + n], sub):
      return start
  return -1


def answer_token_mask(tokenizer, input_ids: np.ndarray, texts: Sequence[Sequence[str]],
                      answers: Sequence[Sequence[str]]) -> np.ndarray:
  """``[B, S]`` 1 on the tokens of each text item's answer (the tokens that cover the answer's
  characters at the item's end), the items of row ``b`` being ``texts[b]`` in order.

  A text item is tokenized on its own in the prompt (special tokens bound it), so its tokens are
  found in the row; an item that is not found raises ``ShapeError``.
  """
  mask = np.zeros(input_ids.shape, np.int32)
  for b, (row_texts, row_answers) in enumerate(zip(texts, answers)):
    end = input_ids.shape[1]
    for text, answer in reversed(list(zip(row_texts, row_answers))):
      enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
      ids, offsets = enc["input_ids"], enc["offset_mapping"]
      start = _find_last(input_ids[b], ids, end)
      if start < 0 or not text.endswith(answer):
        raise ShapeError(f"row {b}: text item {text!r}", "not found",
                         "its tokens in the encoded prompt, ending in the answer")
      first_char = len(text) - len(answer)
      k = sum(1 for _, stop in offsets if stop > first_char)
      mask[b, start + len(ids) - k:start + len(ids)] = 1
      end = start
  return mask


class _CachedImageProcessor:
  """An image processor that processes each distinct image once (one image per call to the
  wrapped processor, the outputs concatenated as it concatenates a list)."""

  def __init__(self, inner):
    self.inner, self.cache = inner, {}

  def __getattr__(self, name):
    return getattr(self.inner, name)

  def one(self, image, **kwargs) -> dict:
    key = (image.size, hashlib.sha1(image.tobytes()).hexdigest())
    if key not in self.cache:
      self.cache[key] = {k: np.asarray(v) for k, v in self.inner(
          images=[image], return_tensors="np", **kwargs).items()}
    return self.cache[key]

  def __call__(self, images=None, **kwargs):
    from transformers import BatchFeature
    kwargs.pop("return_tensors", None)
    parts = [self.one(im, **kwargs) for im in images]
    return BatchFeature({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})


@functools.partial(jax.jit, static_argnames=("graphdef", "keep"))
def _answer_logp(graphdef, state, ids, mask, positions, features, loss_mask, *, keep):
  """``[B]`` (sum, count) of the log-probabilities of the ``loss_mask`` tokens, which lie in the
  last ``keep`` positions (token t predicted from t - 1)."""
  model = nnx.merge(graphdef, state)
  call, _ = model.prefill_inputs(ids, mask, visual_features=features, position_ids=positions)
  logits = model(attention_mask=mask, logits_to_keep=keep, **call).logits[:, :-1]
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  tok = jnp.take_along_axis(logp, ids[:, -keep + 1:, None], axis=-1)[..., 0]
  m = loss_mask[:, -keep + 1:].astype(jnp.float32)
  return jnp.sum(tok * m, -1), jnp.sum(m, -1)


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


class VLMRunner:
  """Qwen2.5-VL prompts of :class:`PromptFormat` -> InfoScore log-probabilities and greedy
  answers (module docstring). ``batch_size`` rows per call (the last batch padded with copies),
  prompt lengths rounded up to ``pad_to``, visual features to ``feature_bucket`` tokens."""

  def __init__(self, model, processor, fmt: PromptFormat, *, batch_size: int = 16,
               pad_to: int = 64, feature_bucket: int = 256):
    if not hasattr(model, "encode_images") or not hasattr(model, "get_rope_index"):
      raise ConfigError("vlm.model.family", model.config.model_type,
                        "qwen2_5_vl (the ICL prompts are Lever-Plus's Qwen2.5-VL layout)")
    self.model, self.fmt = model, fmt
    self.processor = copy.copy(processor)
    self.images = _CachedImageProcessor(processor.image_processor)
    self.processor.image_processor = self.images
    self.tokenizer = processor.tokenizer
    self.batch_size, self.pad_to, self.feature_bucket = batch_size, pad_to, feature_bucket
    self._pil: dict[Any, Any] = {}
    self._features: dict[Any, np.ndarray] = {}

  # ---------------------------------------------------------------- images and features

  def _image(self, value):
    """A loaded PIL image per file path or array (read once)."""
    from PIL import Image
    if isinstance(value, np.ndarray):
      key = (value.shape, hashlib.sha1(np.ascontiguousarray(value).tobytes()).hexdigest())
      load = lambda: Image.fromarray(value.astype(np.uint8))
    else:
      key, load = str(value), lambda: image_lib.load_image(value)
    if key not in self._pil:
      self._pil[key] = load()
    return self._pil[key]

  def _resolve(self, conversation: list[dict]) -> list[dict]:
    out = []
    for m in conversation:
      content = m["content"]
      if isinstance(content, list):
        content = [dict(c, image=self._image(c["image"])) if c.get("type") == "image" else c
                   for c in content]
      out.append(dict(m, content=content))
    return out

  def _visual(self, image) -> np.ndarray:
    """``[tokens, hidden]`` features of one image (encoded once)."""
    out = self.images.one(image)
    key = (image.size, hashlib.sha1(image.tobytes()).hexdigest())
    if key not in self._features:
      self._features[key] = np.asarray(self.model.encode_images(out["pixel_values"],
                                                                out["image_grid_thw"]))
    return self._features[key]

  def _batch(self, conversations: list[list[dict]], add_generation_prompt: bool) -> dict:
    convs = [self._resolve(c) for c in conversations]
    batch = vlm_inputs.encode(self.processor, convs, add_generation_prompt=add_generation_prompt,
                              pad_to_multiple=self.pad_to)
    feats = [self._visual(c["image"]) for conv in convs for m in conv
             if isinstance(m["content"], list) for c in m["content"] if c.get("type") == "image"]
    features = np.concatenate(feats)
    total = _round_up(len(features), self.feature_bucket)
    features = np.concatenate([features, np.zeros((total - len(features),) + features.shape[1:],
                                                  features.dtype)])
    positions, deltas = self.model.get_rope_index(batch["input_ids"], batch["image_grid_thw"],
                                                  batch["attention_mask"])
    return dict(batch, visual_features=features, position_ids=np.asarray(positions),
                rope_deltas=np.asarray(deltas))

  def _chunks(self, items: list):
    """``(chunk padded to batch_size with copies of its last item, real length)``."""
    for start in range(0, len(items), self.batch_size):
      chunk = list(items[start:start + self.batch_size])
      real = len(chunk)
      yield chunk + [chunk[-1]] * (self.batch_size - real), real

  # ---------------------------------------------------------------- scores and answers

  def answer_logp(self, samples: Sequence[Any], shots: Sequence[Sequence[Any]]) -> np.ndarray:
    """``[N]`` mean log-probability of each sample's answer tokens after its ``shots``, the
    answer written in the query's answer slot (InfoScore = differences of ``exp`` of these)."""
    graphdef, state = frozen.split(self.model)
    out = []
    for chunk, real in self._chunks(list(zip(samples, shots))):
      convs = [self.fmt.conversation(s, d, answer=s.answer) for s, d in chunk]
      batch = self._batch(convs, add_generation_prompt=False)
      texts = [[self.fmt.text(s, s.answer)] for s, _ in chunk]
      mask = answer_token_mask(self.tokenizer, batch["input_ids"], texts,
                               [[s.answer] for s, _ in chunk])
      first = int(np.argmax(mask.any(0)))
      keep = _round_up(mask.shape[1] - first + 1, 16)
      total, count = _answer_logp(
          graphdef, state, jnp.asarray(batch["input_ids"], jnp.int32),
          jnp.asarray(batch["attention_mask"], jnp.int32), jnp.asarray(batch["position_ids"]),
          jnp.asarray(batch["visual_features"]), jnp.asarray(mask), keep=min(keep, mask.shape[1]))
      out.append((np.asarray(total) / np.maximum(np.asarray(count), 1))[:real])
    return np.concatenate(out) if out else np.zeros(0)

  def answers(self, samples: Sequence[Any], shots: Sequence[Sequence[Any]], *,
              max_new_tokens: int = 10) -> list[str]:
    """Greedy answers (the checkpoint's stop tokens; special tokens dropped, first line)."""
    defaults = model_defaults(self.model)
    kwargs = {}
    if not defaults.eos_token_id and self.tokenizer.eos_token_id is not None:
      kwargs["eos_token_id"] = self.tokenizer.eos_token_id
    if defaults.pad_token_id is None and self.tokenizer.pad_token_id is not None:
      kwargs["pad_token_id"] = self.tokenizer.pad_token_id
    out = []
    for chunk, real in self._chunks(list(zip(samples, shots))):
      batch = self._batch([self.fmt.conversation(s, d) for s, d in chunk], True)
      gen = generate(self.model, batch["input_ids"], batch["attention_mask"], max_new_tokens,
                     visual_features=jnp.asarray(batch["visual_features"]),
                     position_ids=jnp.asarray(batch["position_ids"]),
                     rope_deltas=jnp.asarray(batch["rope_deltas"]), **kwargs)
      new, counts = np.asarray(gen.new_tokens), np.asarray(gen.num_generated)
      texts = [self.tokenizer.decode([int(t) for t in row[:n]], skip_special_tokens=True)
               for row, n in zip(new, counts)]
      out += [t.strip().split("\n")[0].strip() for t in texts[:real]]
    return out


# ------------------------------------------------------------------------------ inference


def _shots(pool: Sequence[Any], icd_indices: np.ndarray) -> list[list[Any]]:
  return [[pool[int(i)] for i in row] for row in icd_indices]


def exact_match(prediction: str, answer: str) -> float:
  """1.0 when the prediction equals the majority answer under the official VQA normalisation."""
  return float(normalize_answer(prediction) == normalize_answer(answer))


def icl_inference(runner: VLMRunner, queries: Sequence[Any], pool: Sequence[Any], icd_indices,
                  *, max_new_tokens: int = 10) -> dict:
  """Greedy answers of ``queries`` with demonstrations ``pool[icd_indices[i]]`` (in order):
  ``accuracy`` / ``exact_match`` (means) and per sample ``predictions``, ``scores`` (VQA
  accuracy), ``exact`` (:func:`exact_match` with the majority answer)."""
  idx = check_icd_indices(icd_indices, len(queries), len(pool))
  predictions = runner.answers(queries, _shots(pool, idx), max_new_tokens=max_new_tokens)
  scores = [vqa_accuracy(p, q.answers) for p, q in zip(predictions, queries)]
  exact = [exact_match(p, q.answer) for p, q in zip(predictions, queries)]
  return {"accuracy": float(np.mean(scores)), "exact_match": float(np.mean(exact)),
          "predictions": predictions, "scores": scores, "exact": exact}


def reward_fn(runner: VLMRunner, queries: Sequence[Any], pool: Sequence[Any], *,
              max_new_tokens: int = 10):
  """``fn(query_rows [M], icd_indices [M, S]) -> [M]``: exact match + VQA accuracy of the answer
  to ``queries[row]`` with those ICDs (Lever-Plus's ``hard_plus_soft`` reward, in [0, 2])."""
  def fn(rows, icd_indices):
    r = icl_inference(runner, [queries[int(i)] for i in rows], pool, icd_indices,
                      max_new_tokens=max_new_tokens)
    return np.asarray(r["exact"], np.float32) + np.asarray(r["scores"], np.float32)
  return fn


def answer_prob_fn(runner: VLMRunner, queries: Sequence[Any], pool: Sequence[Any]):
  """``prob_fn(query_rows [M], icd_indices [M, S]) -> [M]`` = ``exp`` of
  :meth:`VLMRunner.answer_logp`: the ``prob_fn`` of :func:`jaxvlm.methods.icd.beam_search`."""
  def prob_fn(rows, icd_indices):
    rows = np.asarray(rows)
    idx = np.asarray(icd_indices).reshape(len(rows), -1)
    return np.exp(runner.answer_logp([queries[int(r)] for r in rows], _shots(pool, idx)))
  return prob_fn


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


# ------------------------------------------------------------------------------ synthetic task


def label_split(data: ml_collections.ConfigDict, num: int, seed: int, label_seed: int) -> list:
  """``num`` ``label`` questions of one mapping (``label_seed``) as ``data`` describes them
  (``image_size``, ``grid``, ``max_objects``, ``label_by``, ``word_pool``)."""
  return synthetic_vqa.make_vqa_split(
      num, seed=seed, image_size=data.image_size, grid=data.grid, max_objects=data.max_objects,
      question_types=("label",), label_seed=label_seed, label_by=data.label_by,
      word_pool=data.word_pool)


def prompt_format(config: ml_collections.ConfigDict) -> PromptFormat:
  """The :class:`PromptFormat` of a config's ``prompt`` section (``template``, ``system``)."""
  return PromptFormat(template=config.prompt.template, system=config.prompt.system)


def tokenizer_texts(samples: Sequence[Any], fmt: PromptFormat) -> list[str]:
  """Texts a tiny tokenizer is trained on: every filled template and every answer."""
  return [t for s in samples for t in (fmt.text(s, s.answer), fmt.text(s, ""), *s.answers)]


def episode_rows(processor, fmt: PromptFormat, queries: Sequence[Any],
                 shots: Sequence[Sequence[Any]]) -> dict[str, np.ndarray]:
  """Trainer rows of ICL episodes: the assistant answer and every demonstration's answer tokens
  in ``loss_mask`` (every row the same number of shots and image size)."""
  convs = [fmt.conversation(q, d) for q, d in zip(queries, shots)]
  batch = vlm_inputs.encode(processor, convs, answers=[q.answer for q in queries])
  demos = answer_token_mask(getattr(processor, "tokenizer", processor), batch["input_ids"],
                            [[fmt.text(s, s.answer) for s in d] for d in shots],
                            [[s.answer for s in d] for d in shots])
  batch["loss_mask"] = np.maximum(batch["loss_mask"], demos)
  merge = getattr(processor.image_processor, "merge_size", 1)
  return vlm_inputs.as_rows(batch, merge)


def episode_batch_factory(config: ml_collections.ConfigDict, processor, model,
                          fmt: PromptFormat = PromptFormat()):
  """``batch_fn`` of :func:`jaxvlm.training.vlm.train_vlm` for the ICL episodes (prompts of
  ``fmt``) of the module docstring: step ``t`` has ``1 + t % max_shots`` shots per row, every row
  a fresh mapping, a same-class shot at a random place with probability ``same_class_prob``;
  depends only on ``(seed, step)``."""
  del model
  d, batch_size = config.data, config.train.batch_size
  base = label_split(d, d.num_train, d.train_seed, d.label_seed)
  classes = np.array([s.label_class for s in base])
  by_class = {c: np.nonzero(classes == c)[0] for c in set(classes)}

  def factory(seed, start):
    step = start
    while True:
      rng = np.random.default_rng([seed, step])
      n = 1 + step % d.max_shots
      queries, shots = [], []
      for _ in range(batch_size):
        mapping = synthetic_vqa.label_mapping(int(rng.integers(2 ** 31)), d.label_by,
                                              d.word_pool)
        relabel = lambda s: dataclasses.replace(s, answer=mapping[s.label_class],
                                                answers=(mapping[s.label_class],) * 10)
        idx = rng.choice(len(base), n + 1, replace=False)
        demos = [int(i) for i in idx[1:]]
        if rng.random() < d.same_class_prob:
          same = by_class[base[idx[0]].label_class]
          demos[int(rng.integers(n))] = int(same[rng.integers(len(same))])
        queries.append(relabel(base[idx[0]]))
        shots.append([relabel(base[i]) for i in demos])
      yield episode_rows(processor, fmt, queries, shots)
      step += 1
  return factory


__all__ = ["LEVER_PLUS_TEMPLATE", "PromptFormat", "VLMRunner", "answer_prob_fn",
           "answer_token_mask", "check_icd_indices", "episode_batch_factory", "episode_rows",
           "exact_match", "icl_inference", "label_split", "predictions_path", "prompt_format",
           "reward_fn", "tokenizer_texts", "write_icl_results"]
