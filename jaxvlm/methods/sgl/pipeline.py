"""The SGL pipeline on one batch: shared vision, the guide pass, early exit, pruned decoding.

:func:`guided_batch` — one vision encoding (:func:`shares_vision`: the same tower weights) feeds
both projectors; the guide generates (answer or CoT), its importance over the visual tokens is
the map-free attention of its prompt text after the image and of its generated tokens
(:func:`~jaxvlm.methods.sgl.importance.visual_importance` re-run on the generation's own KV cache
for the text after the image and the generated tokens only: the attention they had while
generating, without a second prefill); the large model keeps
``int(N * prune_ratio)`` visual tokens (``select_tokens``) from layer ``int(L * prune_layer)``
through the KV-cached ``generate`` (:class:`~jaxvlm.models.multimodal.LayerPrune`, original
position ids). Early exit: confidence = exp(mean log p) of the guide's generated tokens,
consistency = the same for its answer teacher-forced with only ``consistency_token_ratio`` of its
visual tokens (its own top tokens, pruned at layer 0), score = (conf + cons) / 2; a sample whose
score reaches ``early_exit_threshold`` is answered by the guide (the large model runs on the
batch unless every sample in it exits; its answers are recorded, "" when it did not run).

:func:`single_model_batch` — one model alone in a ``reasoning_mode`` (the hybrid checkpoint rows).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvlm.errors import ShapeError
from jaxvlm.generation import generate
from jaxvlm.methods.sgl.importance import prune_layer_index, select_visual, visual_importance
from jaxvlm.methods.sgl.settings import SGLSettings
from jaxvlm import frozen
from jaxvlm.models import multimodal as mm

_VISION_FIELDS = ("vision", "vision_feature_layer", "vision_final_norm", "drop_cls",
                  "downsample_ratio")


def shares_vision(a, b) -> bool:
  """True when two VLMs' vision towers are the same computation: equal vision settings and
  bit-identical tower weights (compared, not assumed)."""
  ca, cb = a.config, b.config
  if any(getattr(ca, f) != getattr(cb, f) for f in _VISION_FIELDS if f != "vision"):
    return False
  strip = lambda v: {k: x for k, x in vars(v).items() if k not in ("dtype", "param_dtype")}
  if strip(ca.vision) != strip(cb.vision):
    return False
  la = jax.tree.leaves(nnx.state(a.vision_tower, nnx.Param))
  lb = jax.tree.leaves(nnx.state(b.vision_tower, nnx.Param))
  return len(la) == len(lb) and all(
      x.shape == y.shape and np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


@frozen.jit
def vision_features(model, pixel_values) -> jax.Array:
  """The vision tower's features of ``pixel_values`` (before the projector)."""
  return model.vision_features(pixel_values)


@frozen.jit
def project(model, features) -> jax.Array:
  """``model``'s projected visual tokens ``[T, H_text]`` of shared tower ``features``."""
  return model.multi_modal_projector(features).reshape(-1, model.config.text.hidden_size)


@frozen.jit
def _token_logprobs(model, input_ids, attention_mask, kept, source, target, kwargs):
  logits = model(input_ids=input_ids, attention_mask=attention_mask,
                 prune=mm.LayerPrune(kept, 0), **kwargs).logits
  rows = jnp.take_along_axis(logits, source[..., None], axis=1)  # [B, T, V]
  logp = jax.nn.log_softmax(rows, axis=-1)
  return jnp.take_along_axis(logp, target[..., None], axis=-1)[..., 0]


def answer_score(model, input_ids, attention_mask, answer_ids, num_tokens, image_token_id: int,
                 keep=None, **model_kwargs) -> np.ndarray:
  """``[B]`` exp(mean log p) of each row's first ``num_tokens[b]`` of ``answer_ids [B, T]``, the
  last T columns of the sequence (teacher-forced), with only the ``keep`` visual tokens (indices
  ``[B, K]``; None = all) from layer 0 on. ``input_ids`` marks the visual tokens (the answer
  columns may hold any id that is not ``image_token_id``)."""
  ids, mask = np.asarray(input_ids), np.asarray(attention_mask)
  b, s = ids.shape
  num_answer = np.asarray(answer_ids).shape[1]
  if keep is None:
    n = int(((ids == image_token_id) & (mask > 0)).sum(1).max())
    keep = np.tile(np.arange(n), (b, 1))
  kept = mm.keep_visual_tokens(ids, mask, image_token_id, keep).kept_index
  slot = np.full(ids.shape, -1, np.int64)  # original index -> slot among the kept tokens
  rows, cols = np.nonzero(kept >= 0)
  slot[rows, kept[rows, cols]] = cols
  t = np.arange(num_answer)
  valid = t[None] < np.asarray(num_tokens)[:, None]
  source = slot[:, s - num_answer - 1 + t]  # token s - T + t is predicted from the one before
  if (source[valid] < 0).any():
    raise ShapeError("num_tokens", np.asarray(num_tokens).tolist(), "answers after kept tokens")
  lp = np.asarray(_token_logprobs(model, jnp.asarray(np.maximum(ids, 0)),
                                      jnp.asarray(mask),
                                      jnp.asarray(kept), jnp.asarray(np.maximum(source, 0)),
                                      jnp.asarray(answer_ids, jnp.int32), model_kwargs))
  return np.exp((lp * valid).sum(1) / np.maximum(valid.sum(1), 1))


@frozen.jit
def _embed(model, prompt_ids, new_tokens, image_features):
  prompt = model.embed_inputs(prompt_ids, image_features=image_features)
  return jnp.concatenate([prompt, model.language_model.model.embed_tokens(new_tokens)], axis=1)


def _generate(model, prompter, batch: dict, max_new_tokens: int, **kwargs):
  """(new tokens, counts) as NumPy arrays; with ``return_cache=True`` also the final KV cache."""
  out = generate(model, batch["input_ids"], batch["attention_mask"], max_new_tokens,
                 temperature=0.0, eos_token_id=prompter.eos_token_id,
                 pad_token_id=prompter.pad_token_id, **kwargs)
  new, num = np.asarray(out.new_tokens), np.asarray(out.num_generated)
  return (new, num, out.cache) if out.cache is not None else (new, num)


def _with_generated(batch: dict, new: np.ndarray, num: np.ndarray, image_token_id: int):
  """(marker ids, mask, query mask) of prompt + generated tokens. Marker ids are the prompt ids
  followed by -1 (a generated token is never a visual one, whatever its id); queries are the
  prompt text after the last image token and every generated token that was fed back (not the
  last)."""
  ids, mask = batch["input_ids"], batch["attention_mask"]
  p = ids.shape[1]
  t = np.arange(new.shape[1])[None]
  markers = np.concatenate([ids, np.full(new.shape, -1, ids.dtype)], 1)
  full = np.concatenate([mask, (t < num[:, None]).astype(np.int32)], 1)
  pos = np.arange(p + new.shape[1])[None]
  last_image = np.max(np.where(markers == image_token_id, pos, -1), axis=1, keepdims=True)
  query = (pos > last_image) & (full > 0) & (pos - p != num[:, None] - 1)
  return markers, full, query


def guide_on_batch(guide, prompter, batch: dict, image, max_new_tokens: int,
                   consistency_ratio: float | None = None) -> dict:
  """The guide's greedy generation on a prompt ``batch`` (projected visual tokens ``image``) and
  its importance ``[B, N]``; with ``consistency_ratio`` also the early-exit confidence,
  consistency and score (arrays over the batch)."""
  new, num, cache = _generate(guide, prompter, batch, max_new_tokens, image_features=image,
                              return_cache=True)
  markers, mask, query = _with_generated(batch, new, num, prompter.image_token_id)
  visual = (markers == prompter.image_token_id) & (mask > 0)
  embeds = _embed(guide, jnp.asarray(batch["input_ids"]), jnp.asarray(new), image)
  importance = np.asarray(visual_importance(guide, np.maximum(markers, 0), mask, query, visual,
                                            cache=cache, inputs_embeds=embeds))
  out = {"importance": importance, "new_tokens": new}
  if consistency_ratio is not None:
    score = functools.partial(answer_score, guide, markers, mask, new, num,
                              prompter.image_token_id, inputs_embeds=embeds)
    k = int(importance.shape[1] * consistency_ratio)
    keep = (np.asarray(select_visual(importance, consistency_ratio)) if k
            else np.zeros((new.shape[0], 0), np.int64))
    conf, cons = score(), score(keep=keep)
    out.update(confidence=conf, consistency=cons, score=(conf + cons) / 2)
  return out


def guide_pass(guide, prompter, samples: Sequence[Any], settings: SGLSettings,
               image) -> dict:
  """:func:`guide_on_batch` on ``samples`` in the guide's reasoning mode, with its answers
  (``image``: the guide's projected visual tokens, :func:`project`)."""
  texts = [settings.guide_prompt().format(question=s.question) for s in samples]
  batch = prompter.batch(samples, texts)
  out = guide_on_batch(guide, prompter, batch, image, settings.guide_tokens(),
                       settings.consistency_token_ratio)
  return out | {"answers": [prompter.decode(r) for r in out["new_tokens"]]}


def _selection(importance: np.ndarray, settings: SGLSettings, step: int) -> np.ndarray:
  if settings.selection == "random":
    importance = np.asarray(jax.random.uniform(
        jax.random.fold_in(jax.random.key(settings.seed), step), importance.shape))
  return np.asarray(select_visual(importance, settings.prune_ratio))


def pruned_generate(decoder, prompter, batch: dict, keep: np.ndarray, settings: SGLSettings,
                    **vision) -> np.ndarray:
  """The large model's greedy tokens keeping visual tokens ``keep [B, K]`` from layer
  ``int(L * prune_layer)`` (KV-cached generate, original position ids)."""
  pruned = mm.keep_visual_tokens(batch["input_ids"], batch["attention_mask"],
                                 prompter.image_token_id, keep)
  layer = prune_layer_index(decoder.config.text.num_hidden_layers, settings.prune_layer)
  new, _ = _generate(decoder, prompter, batch, settings.max_new_tokens,
                     prune=mm.LayerPrune(jnp.asarray(pruned.kept_index), layer), **vision)
  return new


def guided_batch(guide, decoder, guide_prompter, decoder_prompter, samples: Sequence[Any],
                 settings: SGLSettings, *, shared: bool, step: int = 0) -> list[dict]:
  """Per-sample records of one SGL batch (see the module docstring). ``shared``: the towers are
  the same (:func:`shares_vision`), so one encoding feeds both projectors."""
  pixels = guide_prompter.batch(samples, [s.question for s in samples])["pixel_values"]
  features = vision_features(guide, pixels)
  image = project(guide, features)
  g = guide_pass(guide, guide_prompter, samples, settings, image)
  texts = [settings.answer_prompt.format(question=s.question) for s in samples]
  if settings.guide_text_mode == "short_rationale":
    rationale = guide_prompter.batch(
        samples, [settings.rationale_prompt.format(question=s.question) for s in samples])
    hint, _ = _generate(guide, guide_prompter, rationale, settings.guide_max_new_tokens,
                        image_features=image)
    texts = [settings.hint_prompt.format(question=t, hint=decoder_prompter.decode(h))
             for t, h in zip(texts, hint)]
  batch = decoder_prompter.batch(samples, texts)
  if shared:
    vision = {"image_features": project(decoder, features)}
  else:
    vision = {"pixel_values": jnp.asarray(batch["pixel_values"])}
  n = int((batch["input_ids"][0] == decoder_prompter.image_token_id).sum())
  if n != g["importance"].shape[1]:
    raise ShapeError("decoder visual tokens", n, f"{g['importance'].shape[1]} (the guide's)")
  keep = _selection(g["importance"], settings, step)
  threshold = settings.early_exit_threshold
  exits = [bool(threshold > 0 and x >= threshold) for x in g["score"]]
  large = [""] * len(samples) if all(exits) else [
      decoder_prompter.decode(r)
      for r in pruned_generate(decoder, decoder_prompter, batch, keep, settings, **vision)]
  records = []
  for i, s in enumerate(samples):
    records.append({"question_id": s.question_id, "question": s.question,
                    "answers": list(s.answers), "small_answer": g["answers"][i],
                    "large_answer": large[i],
                    "prediction": g["answers"][i] if exits[i] else large[i], "exited": exits[i],
                    "confidence": float(g["confidence"][i]),
                    "consistency": float(g["consistency"][i]), "score": float(g["score"][i]),
                    "num_visual": n, "num_kept": int(keep.shape[1]),
                    "distribution": g["importance"][i].tolist()})
  return records


def single_model_batch(model, prompter, samples: Sequence[Any], settings: SGLSettings
                       ) -> list[dict]:
  """One model alone in ``settings.reasoning_mode`` (``normal`` / ``prompt`` / ``two_pass``)."""
  q = [s.question for s in samples]
  mode = settings.reasoning_mode
  if mode == "normal":
    texts, tokens = [settings.answer_prompt.format(question=x) for x in q], settings.max_new_tokens
  else:
    texts = [settings.cot_prompt.format(question=x) for x in q]
    tokens = settings.guide_max_new_tokens
  batch = prompter.batch(samples, texts)
  pixels = {"pixel_values": jnp.asarray(batch["pixel_values"])}
  new, _ = _generate(model, prompter, batch, tokens, **pixels)
  out = [prompter.decode(r) for r in new]
  rationale = out
  if mode == "two_pass":
    batch = prompter.batch(samples, [settings.two_pass_prompt.format(question=x, rationale=r)
                                     for x, r in zip(q, rationale)])
    new, _ = _generate(model, prompter, batch, settings.max_new_tokens, **pixels)
    out = [prompter.decode(r) for r in new]
  return [{"question_id": s.question_id, "question": s.question, "answers": list(s.answers),
           "prediction": p, **({"rationale": r} if mode == "two_pass" else {})}
          for s, p, r in zip(samples, out, rationale)]
