"""The SGL pipeline on one batch: shared vision, the guide pass, early exit, pruned decoding.

:func:`guided_batch` — prompts through each model's processor (:class:`~.prompters.Prompter`:
dynamic tiles, so each row has its own number of visual tokens ``N_b``); with a shared tower
(:func:`shares_vision`, or forced) one vision encoding feeds both projectors. The guide generates
(answer or CoT, ``min_new_tokens`` 1). Its importance over the visual tokens is the map-free
attention of its prompt text after the image and of its generated tokens
(:func:`~jaxvlm.methods.sgl.importance.visual_importance`, re-run on the generation's own KV cache
for those columns only), and the same pass gives its token probabilities. Early exit, as SGL's
evaluation computes it: confidence = geometric mean of the generated tokens' probabilities;
consistency = their product when the guide re-reads its answer teacher-forced with only its top
``int(N_b * consistency_token_ratio)`` visual tokens from layer 0; score = (confidence +
consistency) / 2. A sample whose score reaches ``early_exit_threshold`` is answered by the guide
and leaves the decoder batch (compaction: the decoder runs only on the others, in a batch rounded
up to a power of two). The decoder keeps ``int(N_b * prune_ratio)`` visual tokens per row
(selection and ``kept_index`` on device) from layer ``int(L * prune_layer)`` in the KV-cached
``generate`` (:class:`~jaxvlm.models.multimodal.LayerPrune`, original position ids).

Each record carries its share of the batch's seconds per stage (``preprocess``, ``vision``,
``guide_generation``, ``importance``, ``consistency``, ``selection``, ``decoder``), measured
with the device synchronised at each stage's end.

:func:`single_model_batch` — one model alone in a ``reasoning_mode`` (the hybrid checkpoint rows).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvlm import frozen
from jaxvlm.errors import ShapeError
from jaxvlm.generation import generate
from jaxvlm.methods.sgl.importance import (kept_counts, kept_positions, prune_layer_index,
                                           pruned_length, select_keep, visual_importance)
from jaxvlm.methods.sgl.settings import SGLSettings
from jaxvlm.models import multimodal as mm

log = logging.getLogger(__name__)

_VISION_FIELDS = ("vision", "vision_feature_layer", "vision_final_norm", "drop_cls",
                  "downsample_ratio")
STAGES = ("preprocess", "vision", "guide_generation", "importance", "consistency", "selection",
          "decoder")


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


def resolve_shared_vision(mode: str, guide, decoder) -> bool:
  """``auto``: :func:`shares_vision`; ``force``: shared (a warning is logged when the towers
  differ: the decoder then reads the guide tower's features); ``off``: each encodes its own."""
  same = shares_vision(guide, decoder)
  if mode == "force" and not same:
    log.warning("sgl: shared vision forced although the guide's and the decoder's vision towers "
                "differ; the decoder reads the guide tower's features")
  return same if mode == "auto" else mode == "force"


class StageTimer:
  """Seconds per stage; :meth:`lap` waits for the stage's outputs, then books the time since
  the previous lap to it."""

  def __init__(self):
    self.seconds = defaultdict(float)
    self._last = time.perf_counter()

  def lap(self, stage: str, *outputs) -> None:
    jax.block_until_ready(outputs)
    now = time.perf_counter()
    self.seconds[stage] += now - self._last
    self._last = now


@frozen.jit
def vision_features(model, pixel_values) -> jax.Array:
  """The vision tower's features of ``pixel_values`` (before the projector)."""
  return model.vision_features(pixel_values)


@frozen.jit
def project(model, features) -> jax.Array:
  """``model``'s projected visual tokens ``[T, H_text]`` of shared tower ``features``."""
  return model.multi_modal_projector(features).reshape(-1, model.config.text.hidden_size)


@frozen.jit
def _answer_logprobs(model, input_ids, attention_mask, kept, columns, targets, kwargs):
  """``[B, T]`` log p(``targets``) predicted at sequence ``columns [B, T]`` with only the
  ``kept`` tokens from layer 0 on."""
  logits = model(input_ids=input_ids, attention_mask=attention_mask,
                 prune=mm.LayerPrune(kept, 0), **kwargs).logits
  b, s = input_ids.shape
  rows = jnp.broadcast_to(jnp.arange(b)[:, None], kept.shape)
  slot = jnp.full((b, s + 1), 0, jnp.int32).at[rows, jnp.where(kept >= 0, kept, s)].set(
      jnp.broadcast_to(jnp.arange(kept.shape[1], dtype=jnp.int32), kept.shape))[:, :s]
  picked = jnp.take_along_axis(logits, jnp.take_along_axis(slot, columns, 1)[..., None], axis=1)
  logp = jax.nn.log_softmax(picked.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


def answer_logprob(model, markers, attention_mask, keep, keep_count, prompt_length: int,
                   answer_ids, num_tokens, image_token_id: int, **model_kwargs) -> np.ndarray:
  """``[B]`` summed log-probability of each row's first ``num_tokens[b]`` ``answer_ids [B, T]``
  (columns ``prompt_length ..`` of the sequence, teacher-forced) when only the visual tokens
  ``keep [B, N]`` (``keep_count [B]`` of them) and every text token go on from layer 0.
  ``markers``: the sequence ids with -1 at the generated columns (never taken as visual)."""
  markers = np.asarray(markers)
  t = np.arange(np.asarray(answer_ids).shape[1])
  length = pruned_length(markers, attention_mask, image_token_id, keep_count)
  kept = kept_positions(jnp.asarray(markers), jnp.asarray(attention_mask), keep,
                        image_token_id=image_token_id, length=length)
  columns = np.broadcast_to(prompt_length - 1 + t, (markers.shape[0], len(t)))
  lp = _answer_logprobs(model, jnp.asarray(np.maximum(markers, 0), jnp.int32),
                        jnp.asarray(attention_mask), kept, jnp.asarray(columns, jnp.int32),
                        jnp.asarray(answer_ids, jnp.int32), model_kwargs)
  valid = t[None] < np.asarray(num_tokens)[:, None]
  return np.asarray((lp * valid).sum(1))


@frozen.jit
def _embed(model, prompt_ids, new_tokens, image_features):
  prompt = model.embed_inputs(prompt_ids, image_features=image_features)
  return jnp.concatenate([prompt, model.language_model.model.embed_tokens(new_tokens)], axis=1)


def _generate(model, prompter, batch: dict, max_new_tokens: int, min_new_tokens: int = 1,
              **kwargs):
  """(new tokens, counts) as NumPy arrays; with ``return_cache=True`` also the final KV cache."""
  out = generate(model, batch["input_ids"], batch["attention_mask"], max_new_tokens,
                 temperature=0.0, eos_token_id=prompter.eos_token_id,
                 pad_token_id=prompter.pad_token_id, min_new_tokens=min_new_tokens, **kwargs)
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
  full = np.concatenate([mask, (t < num[:, None]).astype(mask.dtype)], 1)
  pos = np.arange(p + new.shape[1])[None]
  last_image = np.max(np.where(markers == image_token_id, pos, -1), axis=1, keepdims=True)
  query = (pos > last_image) & (full > 0) & (pos - p != num[:, None] - 1)
  return markers, full, query


def guide_on_batch(guide, prompter, batch: dict, image, max_new_tokens: int,
                   consistency_ratio: float | None = None, min_new_tokens: int = 1,
                   timer: StageTimer | None = None) -> dict:
  """The guide's greedy generation on a prompt ``batch`` (projected visual tokens ``image``), its
  importance ``[B, N_max]`` (device) with ``counts [B]`` visual tokens per row, and its
  ``confidence``; with ``consistency_ratio`` also ``consistency`` and ``score`` (module
  docstring; NumPy arrays over the batch)."""
  timer = timer or StageTimer()
  new, num, cache = _generate(guide, prompter, batch, max_new_tokens, min_new_tokens,
                              image_features=image, return_cache=True)
  timer.lap("guide_generation")
  markers, mask, query = _with_generated(batch, new, num, prompter.image_token_id)
  visual = (markers == prompter.image_token_id) & (mask > 0)
  counts = visual.sum(1)
  seq = np.concatenate([batch["input_ids"], new], 1)
  embeds = _embed(guide, jnp.asarray(batch["input_ids"]), jnp.asarray(new), image)
  importance, logp = visual_importance(guide, seq, mask, query, visual, cache=cache,
                                       inputs_embeds=embeds, return_logprobs=True)
  p, t = batch["input_ids"].shape[1], np.arange(new.shape[1])
  valid = t[None] < num[:, None]
  token_logp = np.asarray(logp)[:, p - 1 + t]
  confidence = np.exp((token_logp * valid).sum(1) / np.maximum(num, 1))
  timer.lap("importance", importance)
  out = {"importance": importance, "counts": counts, "new_tokens": new, "num_generated": num,
         "confidence": confidence}
  if consistency_ratio is not None:
    keep = select_keep(importance, counts, consistency_ratio)
    total = answer_logprob(guide, markers, mask, keep, kept_counts(counts, consistency_ratio), p,
                           new, num, prompter.image_token_id, inputs_embeds=embeds)
    consistency = np.exp(total)
    out.update(consistency=consistency, score=(confidence + consistency) / 2)
    timer.lap("consistency")
  return out


def guide_pass(guide, prompter, samples: Sequence[Any], settings: SGLSettings, image,
               timer: StageTimer | None = None) -> dict:
  """:func:`guide_on_batch` on ``samples`` in the guide's reasoning mode, with its answers
  (``image``: the guide's projected visual tokens, :func:`project`)."""
  texts = [settings.guide_prompt().format(question=s.question) for s in samples]
  batch = prompter.batch(samples, texts)
  out = guide_on_batch(guide, prompter, batch, image, settings.guide_tokens(),
                       settings.consistency_token_ratio, settings.min_new_tokens, timer)
  return out | {"answers": [prompter.decode(r) for r in out["new_tokens"]]}


def select_for_decoder(importance, counts, settings: SGLSettings, step: int) -> jax.Array:
  """Keep mask ``[B, N_max]`` (device) of the decoder: the guide's top tokens, or a seeded
  uniform draw (``selection='random'``)."""
  if settings.selection == "random":
    importance = jax.random.uniform(jax.random.fold_in(jax.random.key(settings.seed), step),
                                    importance.shape)
  return select_keep(importance, counts, settings.prune_ratio)


def pruned_generate(decoder, prompter, batch: dict, keep, keep_count, settings: SGLSettings,
                    **vision) -> np.ndarray:
  """The large model's greedy tokens keeping the visual tokens ``keep [B, N_max]`` (device;
  ``keep_count [B]`` per row) from layer ``int(L * prune_layer)`` (KV-cached generate, original
  position ids)."""
  img = prompter.image_token_id
  length = pruned_length(batch["input_ids"], batch["attention_mask"], img, keep_count)
  kept = kept_positions(jnp.asarray(batch["input_ids"]), jnp.asarray(batch["attention_mask"]),
                        keep, image_token_id=img, length=length)
  layer = prune_layer_index(decoder.config.text.num_hidden_layers, settings.prune_layer)
  new, _ = _generate(decoder, prompter, batch, settings.max_new_tokens, settings.min_new_tokens,
                     prune=mm.LayerPrune(kept, layer), **vision)
  return new


def _bucket(n: int, limit: int) -> int:
  """The smallest power of two >= ``n``, at most ``limit``."""
  return min(limit, 1 << max(n - 1, 0).bit_length())


def _tile_rows(num_patches: np.ndarray, rows: Sequence[int]) -> np.ndarray:
  """Indices of the tiles of ``rows`` (one image per row) in a batch's ``pixel_values``."""
  start = np.concatenate([[0], np.cumsum(num_patches)])
  return np.concatenate([np.arange(start[r], start[r + 1]) for r in rows])


def guided_batch(guide, decoder, guide_prompter, decoder_prompter, samples: Sequence[Any],
                 settings: SGLSettings, *, shared: bool, step: int = 0) -> list[dict]:
  """Per-sample records of one SGL batch (see the module docstring). ``shared``: one encoding
  (the guide's tower) feeds both projectors."""
  timer = StageTimer()
  texts = [settings.guide_prompt().format(question=s.question) for s in samples]
  guide_batch = guide_prompter.batch(samples, texts)
  timer.lap("preprocess")
  features = vision_features(guide, guide_batch["pixel_values"])
  image = project(guide, features)
  timer.lap("vision", image)
  g = guide_on_batch(guide, guide_prompter, guide_batch, image, settings.guide_tokens(),
                     settings.consistency_token_ratio, settings.min_new_tokens, timer)
  g_answers = [guide_prompter.decode(r) for r in g["new_tokens"]]
  texts = [settings.answer_prompt.format(question=s.question) for s in samples]
  if settings.guide_text_mode == "short_rationale":
    rationale = guide_prompter.batch(
        samples, [settings.rationale_prompt.format(question=s.question) for s in samples])
    hint, _ = _generate(guide, guide_prompter, rationale, settings.guide_max_new_tokens,
                        settings.min_new_tokens, image_features=image)
    texts = [settings.hint_prompt.format(question=t, hint=guide_prompter.decode(h))
             for t, h in zip(texts, hint)]
    timer.lap("guide_generation")
  threshold = settings.early_exit_threshold
  exits = [bool(threshold > 0 and x >= threshold) for x in g["score"]]
  rest = [i for i, e in enumerate(exits) if not e]
  counts = g["counts"]
  keep_count = kept_counts(counts, settings.prune_ratio)
  large, rows = [""] * len(samples), []
  if rest:
    rows = rest + [rest[-1]] * (_bucket(len(rest), len(samples)) - len(rest))
    batch = decoder_prompter.batch([samples[i] for i in rows], [texts[i] for i in rows],
                                   pixels=not shared)  # shared: the guide's features serve
    own = ((batch["input_ids"] == decoder_prompter.image_token_id)
           & (batch["attention_mask"] > 0)).sum(1)
    if not np.array_equal(own, counts[rows]):
      raise ShapeError("decoder visual tokens", own.tolist(),
                       f"{counts[rows].tolist()} (the guide's, per row)")
    timer.lap("preprocess")
    if shared:
      vision = {"image_features": project(
          decoder, features[jnp.asarray(_tile_rows(guide_batch["num_patches"], rows))])}
    else:
      vision = {"pixel_values": jnp.asarray(batch["pixel_values"])}
    keep = select_for_decoder(g["importance"][jnp.asarray(rows)], counts[rows], settings, step)
    timer.lap("selection", keep)
    new = pruned_generate(decoder, decoder_prompter, batch, keep, keep_count[rows], settings,
                          **vision)
    for i, r in zip(rest, new):
      large[i] = decoder_prompter.decode(r)
    timer.lap("decoder")
  share = {k: v / len(samples) for k, v in timer.seconds.items()}
  importance = np.asarray(g["importance"])
  return [{"question_id": s.question_id, "question": s.question, "answers": list(s.answers),
           "small_answer": g_answers[i], "large_answer": large[i],
           "prediction": g_answers[i] if exits[i] else large[i], "exited": exits[i],
           "confidence": float(g["confidence"][i]), "consistency": float(g["consistency"][i]),
           "score": float(g["score"][i]), "num_visual": int(counts[i]),
           "num_kept": int(keep_count[i]), "seconds": share, "program_shape": len(rows),
           "distribution": importance[i, :counts[i]].tolist()}
          for i, s in enumerate(samples)]


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
  new, _ = _generate(model, prompter, batch, tokens, settings.min_new_tokens, **pixels)
  out = [prompter.decode(r) for r in new]
  rationale = out
  if mode == "two_pass":
    batch = prompter.batch(samples, [settings.two_pass_prompt.format(question=x, rationale=r)
                                     for x, r in zip(q, rationale)])
    new, _ = _generate(model, prompter, batch, settings.max_new_tokens, settings.min_new_tokens,
                       **pixels)
    out = [prompter.decode(r) for r in new]
  return [{"question_id": s.question_id, "question": s.question, "answers": list(s.answers),
           "prediction": p, **({"rationale": r} if mode == "two_pass" else {})}
          for s, p, r in zip(samples, out, rationale)]
