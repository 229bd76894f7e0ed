"""Guide importance: attention of the query tokens onto the visual tokens, summed over layers,
heads and queries (SGL), from attention maps or map-free (:func:`visual_importance`), and the
top-``int(N * prune_ratio)`` selection through select_tokens.

Rows may hold different numbers of visual tokens (dynamic tiling gives each image its own tile
count): importance is ``[B, N_max]`` with zeros after a row's own N, and the selection
(:func:`select_keep`) keeps ``int(N_b * prune_ratio)`` tokens of row b, on device, as a mask
that :func:`kept_positions` turns into the pruned sequence's ``kept_index`` without a host
round trip."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import pallas_kernels
from jaxvlm.errors import ConfigError, ShapeError
from jaxvlm.layers.attention import KVCache, attention
from jaxvlm import frozen


def importance_from_attentions(attentions, query_mask, visual_mask) -> jnp.ndarray:
  """``[B, N]``: sum over layers, heads and ``query_mask`` rows of the probabilities
  (``attentions``: per layer ``[B, H, S, S]``) on the ``visual_mask`` columns (N per row)."""
  q = jnp.asarray(query_mask, jnp.float32)
  mass = sum(jnp.einsum("bhqk,bq->bk", a.astype(jnp.float32), q) for a in attentions)
  v_idx = jnp.argsort(~jnp.asarray(visual_mask, bool), axis=1, stable=True)
  n = int(np.asarray(visual_mask).sum(1).max())
  return jnp.take_along_axis(mass, v_idx[:, :n], axis=1)


def num_kept(n: int, prune_ratio: float) -> int:
  """``int(n * prune_ratio)`` visual tokens kept; ``prune_ratio`` must lie in (0, 1]."""
  if not 0.0 < prune_ratio <= 1.0:
    raise ConfigError("prune_ratio", prune_ratio, "a value in (0, 1]")
  return int(n * prune_ratio)


def prune_layer_index(num_layers: int, prune_layer: float) -> int:
  """``int(L * prune_layer)``; ``prune_layer`` must lie in [0, 1)."""
  if not 0.0 <= prune_layer < 1.0:
    raise ConfigError("prune_layer", prune_layer, "a value in [0, 1)")
  return int(num_layers * prune_layer)


def select_visual(importance, prune_ratio: float) -> jnp.ndarray:
  """Indices ``[B, K]`` (ascending) of the ``K = int(N * prune_ratio)`` most important tokens."""
  imp = jnp.asarray(importance, jnp.float32)
  k = num_kept(imp.shape[1], prune_ratio)
  return pallas_kernels.select_tokens(imp, imp[..., None], k).indices


def kept_counts(counts, prune_ratio: float) -> np.ndarray:
  """``int(N_b * prune_ratio)`` per row of visual-token ``counts [B]`` (host integers)."""
  return np.asarray([num_kept(int(n), prune_ratio) for n in np.asarray(counts)], np.int32)


def select_keep(importance, counts, prune_ratio: float) -> jax.Array:
  """Bool ``[B, N_max]`` (device): row b keeps its ``int(N_b * prune_ratio)`` most important of
  its first ``N_b`` tokens (select_tokens with per-row budgets; equal scores: lower index)."""
  counts = np.asarray(counts)
  k = kept_counts(counts, prune_ratio)
  return _keep_mask(jnp.asarray(importance, jnp.float32), jnp.asarray(counts, jnp.int32),
                    jnp.asarray(k), max_k=int(k.max(initial=0)))


@functools.partial(jax.jit, static_argnames=("max_k",))
def _keep_mask(importance, counts, k, max_k: int):
  b, n = importance.shape
  valid = jnp.arange(n)[None] < counts[:, None]
  scores = jnp.where(valid, importance, -jnp.inf)
  idx = pallas_kernels.select_tokens(scores, scores[..., None], k, max_k=max_k).indices
  rows = jnp.broadcast_to(jnp.arange(b)[:, None], idx.shape)
  return jnp.zeros((b, n + 1), bool).at[rows, jnp.where(idx >= 0, idx, n)].set(True)[:, :n]


def pruned_length(input_ids, attention_mask, image_token_id: int, keep_counts) -> int:
  """Length of the pruned sequence (the longest row of text + kept visual tokens), on host."""
  ids, mask = np.asarray(input_ids), np.asarray(attention_mask) > 0
  visual = ((ids == image_token_id) & mask).sum(1)
  return int((mask.sum(1) - visual + np.asarray(keep_counts)).max())


@functools.partial(jax.jit, static_argnames=("image_token_id", "length"))
def kept_positions(input_ids, attention_mask, keep, *, image_token_id: int, length: int):
  """``kept_index [B, length]`` (device) of :class:`~jaxvlm.models.multimodal.LayerPrune`: each
  row's valid text tokens and the visual tokens ``keep [B, N_max]`` marks, in order, left padded
  with -1 (equal to :func:`jaxvlm.models.multimodal.keep_visual_tokens`' ``kept_index``)."""
  valid = attention_mask > 0
  is_image = (input_ids == image_token_id) & valid
  rank = jnp.maximum(jnp.cumsum(is_image, axis=1) - 1, 0)
  kept_image = is_image & jnp.take_along_axis(keep, jnp.minimum(rank, keep.shape[1] - 1), axis=1)
  sel = valid & (~is_image | kept_image)
  order = jnp.argsort(~sel, axis=1, stable=True)[:, :length]
  shift = length - jnp.sum(sel, axis=1, keepdims=True)
  src = jnp.arange(length)[None] - shift
  out = jnp.take_along_axis(order, jnp.maximum(src, 0), axis=1)
  return jnp.where(src >= 0, out, -1).astype(jnp.int32)


def _row_indices(mask) -> tuple[np.ndarray, np.ndarray]:
  """``(index [B, n], valid [B, n])``: each row's True positions first (n = the largest count)."""
  mask = np.asarray(jax.device_get(mask)).astype(bool)
  n = max(int(mask.sum(1).max(initial=0)), 1)
  order = np.argsort(~mask, axis=1, kind="stable")[:, :n]
  return order.astype(np.int32), np.take_along_axis(mask, order, 1)


def visual_importance(model, input_ids, attention_mask, query_mask, visual_mask, *,
                      cache: KVCache | None = None, return_logprobs: bool = False,
                      **model_kwargs):
  """``[B, N]`` guide importance without attention maps: every layer's attention of only the
  ``query_mask`` rows over all keys (``[B, H, n_query, S]``, never ``[S, S]``), summed over layers,
  heads and queries, at the ``visual_mask`` columns (``N_b`` per row, in order; zeros after them
  up to ``N = max N_b``). With ``return_logprobs`` also ``[B, S]`` log-probabilities of each
  next token (column c: of ``input_ids[:, c + 1]``; 0 before the first computed column and at
  the last): the guide's token probabilities read from the same pass.

  Runs one forward of ``model`` (a :class:`VisionLanguageModel` or :class:`LlamaForCausalLM`;
  ``model_kwargs``: ``pixel_values`` / ``image_features``) through its ``attention_fn`` hook, with
  the model's own attention implementation for the outputs. Equals
  :func:`importance_from_attentions` on the full maps (tested).

  ``cache``: the KV cache of the generation that produced the sequence (``generate(...,
  return_cache=True).cache``, slot = column). Then only the columns from the first query on run,
  against the cached keys / values of the columns before them: the same attention for a fraction
  of a prefill (the text after the image and the generated tokens, not the image). Where the
  suffix holds visual columns (left padding shifts rows) ``inputs_embeds`` of the whole sequence
  must be given.
  """
  v_idx, v_valid = _row_indices(visual_mask)
  ids, mask, query = (np.asarray(jax.device_get(a)) for a in (input_ids, attention_mask,
                                                                query_mask))
  start = 0
  if cache is not None:
    start = int(np.argmax(query.any(0)))  # the first column that is a query in some row
    if cache.max_len < ids.shape[1]:
      raise ShapeError("cache", cache.max_len, f">= {ids.shape[1]} slots (the sequence)")
    embeds = model_kwargs.get("inputs_embeds")
    if embeds is None and start <= int(v_idx.max()):
      raise ShapeError("inputs_embeds", None, f"the sequence's embeddings: visual columns lie "
                       f"after the first query column {start}")
    keep = jnp.arange(cache.max_len)[None] < start  # the suffix's slots are written again
    model_kwargs = model_kwargs | {"cache": cache.replace(
        index=jnp.asarray(start, jnp.int32), key_valid=cache.key_valid & keep)}
    if embeds is not None:
      model_kwargs["inputs_embeds"] = embeds[:, start:]
    ids, mask, query = ids[:, start:], mask[:, start:], query[:, start:]
  q_idx, q_valid = _row_indices(query)
  graphdef, state = frozen.split(model)
  importance, logp = _importance_jit(
      graphdef, state, jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32),
      jnp.asarray(q_idx), jnp.asarray(q_valid), jnp.asarray(v_idx), jnp.asarray(v_valid),
      model_kwargs, logprobs=return_logprobs)
  if not return_logprobs:
    return importance
  return importance, jnp.pad(logp, ((0, 0), (start, 0)))


@functools.partial(jax.jit, static_argnames=("graphdef", "logprobs"))
def _importance_jit(graphdef, state, input_ids, attention_mask, q_idx, q_valid, v_idx, v_valid,
                    kwargs, logprobs: bool):
  model = nnx.merge(graphdef, state)
  lm_cfg = getattr(model.config, "text", model.config)
  parts = []

  def attention_fn(q, k, v, mask, layer):
    del layer
    out, _ = attention(q, k, v, mask, implementation=lm_cfg.attention_impl, causal=lm_cfg.causal)
    qs = jnp.take_along_axis(q, q_idx[:, :, None, None], axis=1)
    m = jnp.broadcast_to(mask, (q.shape[0], mask.shape[1], q.shape[1], k.shape[1]))
    ms = jnp.take_along_axis(m, q_idx[:, None, :, None], axis=2)
    _, probs = attention(qs, k, v, ms, return_probs=True)  # [B, H, n_query, S]
    mass = jnp.einsum("bhqk,bq->bk", probs, q_valid.astype(jnp.float32))
    parts.append(jnp.where(v_valid, jnp.take_along_axis(mass, v_idx, axis=1), 0.0))
    return out

  out = model(input_ids=input_ids, attention_mask=attention_mask, attention_fn=attention_fn,
              logits_to_keep=0 if logprobs else 1, **kwargs)
  if not logprobs:
    return sum(parts), None
  logp = jax.nn.log_softmax(out.logits[:, :-1].astype(jnp.float32), axis=-1)
  nxt = jnp.take_along_axis(logp, input_ids[:, 1:, None], axis=-1)[..., 0]
  return sum(parts), jnp.pad(nxt, ((0, 0), (0, 1)))
