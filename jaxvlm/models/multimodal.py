"""The merge contract shared by every VLM: visual features <-> placeholder tokens.

* :func:`merge_visual` scatters the visual features into the embedding sequence at the positions of
  the image placeholder tokens (count mismatch -> :class:`~jaxvlm.errors.ShapeError`).
* :func:`keep_visual_tokens` is the ONE function that shortens a prompt when only K of the N visual
  tokens of each row are kept (K = 0..N, ragged over the batch): ``input_ids``, the attention mask
  and the position ids (1-D ``[B, S]`` or M-RoPE ``[3, B, S]``) are rebuilt together, left padded,
  so ids, embeddings and positions can never disagree. :func:`gather_kept_features` selects the
  matching feature rows.
* :class:`LayerPrune` drops tokens inside the LM at decoder layer ``l`` keeping the original
  positions (SGL), with or without a KV cache; :func:`forward_with_layer_pruning` is its
  cache-free forward.
* :func:`text_to_visual_attention` extracts the attention of text queries over visual keys.
* :func:`insert_token` adds one token per row (e.g. a latency token after the image tokens) with
  ids, mask and positions rebuilt together.

``keep_visual_tokens`` and ``insert_token`` run on the host (output shapes depend on values);
everything else is jit-compatible.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxvlm.errors import ShapeError


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def merge_visual(inputs_embeds: jax.Array, input_ids: jax.Array, features: jax.Array,
                 image_token_id: int) -> jax.Array:
  """Replaces the embeddings of the placeholder tokens, in order, by ``features [T, H]``.

  ``features`` holds every image's tokens concatenated (row-major over the batch). When
  ``input_ids`` is concrete, a placeholder count different from ``T`` raises ``ShapeError``.
  """
  is_image = jnp.asarray(input_ids) == image_token_id
  t = features.shape[0]
  if _is_concrete(is_image):
    n = int(jnp.sum(is_image))
    if n != t:
      raise ShapeError("visual features", t, f"{n} (the number of image placeholder tokens "
                       f"id={image_token_id} in input_ids)")
  if t == 0:
    return inputs_embeds
  b, s = is_image.shape
  slot = jnp.clip(jnp.cumsum(is_image.reshape(-1)) - 1, 0, t - 1).reshape(b, s)
  gathered = jnp.take(features.astype(inputs_embeds.dtype), slot, axis=0)
  return jnp.where(is_image[..., None], gathered, inputs_embeds)


@flax.struct.dataclass
class PrunedInputs:
  """A shortened, left-padded prompt. ``kept_index [B, S']`` is the original index of each slot
  (-1 on padding); ``position_ids`` is ``[B, S']`` or ``[3, B, S']`` like the input;
  ``rope_deltas [B, 1]`` = max position + 1 - kept length, so decoding continues after the
  largest kept position (M-RoPE models take it as ``rope_deltas``)."""

  input_ids: np.ndarray
  attention_mask: np.ndarray
  position_ids: np.ndarray
  kept_index: np.ndarray
  rope_deltas: np.ndarray


def _keep_mask(keep: Any, counts: np.ndarray) -> np.ndarray:
  """``keep`` (bool ``[B, N]`` or indices ``[B, K]`` with -1 padding) -> bool ``[B, max(counts)]``."""
  keep = np.asarray(jax.device_get(keep))
  b, n_max = len(counts), int(counts.max(initial=0))
  if keep.ndim != 2 or keep.shape[0] != b:
    raise ShapeError("keep", keep.shape, f"a [batch={b}, N] bool mask or [batch, K] index array")
  if keep.dtype == bool:
    if keep.shape[1] < n_max or keep[:, n_max:].any():
      raise ShapeError("keep", keep.shape, f"[{b}, {n_max}] (N = visual tokens per row)")
    mask = keep[:, :n_max].copy()
  else:
    mask = np.zeros((b, n_max), bool)
    for r in range(b):
      idx = keep[r][keep[r] >= 0]
      if (idx >= counts[r]).any():
        raise ShapeError(f"keep[{r}]", idx.tolist(), f"indices < {counts[r]} (visual tokens)")
      mask[r, idx] = True
  for r in range(b):
    if mask[r, counts[r]:].any():
      raise ShapeError(f"keep[{r}]", int(mask[r].sum()),
                       f"kept tokens among the row's {counts[r]} visual tokens")
  return mask


def keep_visual_tokens(input_ids, attention_mask, image_token_id: int, keep, *,
                       position_ids=None, keep_positions: bool = True,
                       pad_token_id: int = 0) -> PrunedInputs:
  """Keeps the visual tokens selected by ``keep`` and every valid text token, per row.

  Args:
    input_ids, attention_mask: ``[B, S]`` (left or right padded).
    keep: bool ``[B, N]`` (N = visual tokens of the row, in order) or indices ``[B, K]`` (-1 pads).
    position_ids: ``[B, S]`` or M-RoPE ``[3, B, S]``; default ``cumsum(mask) - 1``.
    keep_positions: True keeps each token's original position (SGL); False renumbers the kept
      tokens contiguously ``0..S'-1`` on every axis (budgeted inference).
  Returns:
    :class:`PrunedInputs`, left padded to the longest kept row.
  """
  ids = np.asarray(jax.device_get(input_ids))
  valid = (np.ones_like(ids, bool) if attention_mask is None
           else np.asarray(jax.device_get(attention_mask)).astype(bool))
  is_image = (ids == image_token_id) & valid
  counts = is_image.sum(1)
  b = ids.shape[0]
  keep_mask = _keep_mask(keep, counts)
  if position_ids is None:
    position_ids = np.maximum(np.cumsum(valid, 1) - 1, 0)
  pos = np.asarray(jax.device_get(position_ids))
  pos3 = pos if pos.ndim == 3 else pos[None]
  keep_padded = np.concatenate([keep_mask, np.zeros((b, 1), bool)], axis=1)
  rows = []
  for r in range(b):
    rank = np.maximum(np.cumsum(is_image[r]) - 1, 0)
    kept_image = is_image[r] & keep_padded[r][rank]
    rows.append(np.nonzero(valid[r] & (~is_image[r] | kept_image))[0])
  length = max((len(x) for x in rows), default=0)
  kept_index = np.full((b, length), -1, np.int64)
  for r, idx in enumerate(rows):
    kept_index[r, length - len(idx):] = idx
  real = kept_index >= 0
  src = np.where(real, kept_index, 0)
  new_ids = np.where(real, np.take_along_axis(ids, src, 1), pad_token_id)
  src3 = np.broadcast_to(src, pos3.shape[:1] + src.shape)
  if keep_positions:
    new_pos = np.where(real[None], np.take_along_axis(pos3, src3, 2), 0)
  else:
    new_pos = np.broadcast_to(np.where(real, np.maximum(np.cumsum(real, 1) - 1, 0), 0), src3.shape)
  new_pos = new_pos.astype(pos.dtype)
  deltas = np.where(real.any(1), np.max(np.where(real[None], new_pos, -1), axis=(0, 2)) + 1, 0) \
      - real.sum(1)
  return PrunedInputs(new_ids.astype(ids.dtype), real.astype(np.int32),
                      new_pos if pos.ndim == 3 else new_pos[0], kept_index,
                      deltas[:, None].astype(pos.dtype))


def gather_kept_features(features, counts, keep) -> jax.Array:
  """Feature rows ``[T', H]`` of the kept visual tokens, in the order :func:`merge_visual` wants.

  ``features [T, H]`` holds each row's ``counts[r]`` visual tokens concatenated over the batch;
  ``keep`` is the same argument as for :func:`keep_visual_tokens`.
  """
  counts = np.asarray(counts)
  if features.shape[0] != counts.sum():
    raise ShapeError("features", features.shape[0], f"{counts.sum()} (sum of visual counts)")
  mask = _keep_mask(keep, counts)
  flat = np.concatenate([mask[r, :counts[r]] for r in range(len(counts))]) if len(counts) else \
      np.zeros((0,), bool)
  return jnp.asarray(features)[np.nonzero(flat)[0]]


@flax.struct.dataclass
class LayerPrune:
  """Drop tokens inside a decoder: from decoder layer ``layer`` on, only the tokens at
  ``kept_index [B, S']`` (increasing per row, -1 = padding, e.g. :attr:`PrunedInputs.kept_index`
  with ``keep_positions=True``) go on, at their original positions. Passed as ``prune=`` to
  :class:`~jaxvlm.models.llama.modeling.LlamaForCausalLM` (or a VLM's ``prefill_inputs`` /
  :func:`~jaxvlm.generation.generate`, whose decode then runs on the pruned KV cache)."""

  kept_index: jax.Array
  layer: int = flax.struct.field(pytree_node=False, default=0)


def forward_with_layer_pruning(lm, inputs_embeds: jax.Array, attention_mask: jax.Array,
                               position_embeddings: tuple[jax.Array, jax.Array], layer: int,
                               kept_index: jax.Array, *, output_hidden_states: bool = False):
  """Prefill-only forward of a causal decoder that keeps only ``kept_index`` tokens from ``layer``
  (:class:`LayerPrune` without a cache). ``lm`` is a :class:`LlamaForCausalLM`.
  Returns ``(logits [B, S', V], hidden_states tuple | None)``; hidden state ``i`` has length S for
  ``i < layer`` and S' after.
  """
  out = lm(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
           position_embeddings=position_embeddings, output_hidden_states=output_hidden_states,
           prune=LayerPrune(jnp.asarray(kept_index), layer))
  return out.logits, out.hidden_states


def _first_true_indices(mask: jax.Array, field: str) -> jax.Array:
  """Indices ``[B, n]`` of the True entries per row (every row must have the same count n)."""
  mask = jnp.asarray(mask).astype(bool)
  counts = np.asarray(jax.device_get(jnp.sum(mask, axis=1)))
  if len(set(counts.tolist())) > 1:
    raise ShapeError(field, counts.tolist(), "the same number of selected positions in every row")
  n = int(counts[0]) if len(counts) else 0
  return jnp.argsort(~mask, axis=1, stable=True)[:, :n]


def text_to_visual_attention(attentions, query_mask, visual_mask) -> jax.Array:
  """``[L, B, H, n_query, n_visual]`` probabilities of the queries over the visual keys.

  ``attentions``: per-layer ``[B, H, S, S]`` (``output_attentions=True``); ``query_mask`` and
  ``visual_mask`` ``[B, S]`` select the query and visual positions (same count in every row).
  """
  q_idx = _first_true_indices(query_mask, "query_mask")
  v_idx = _first_true_indices(visual_mask, "visual_mask")
  a = jnp.stack(attentions)  # [L, B, H, S, S]
  a = jnp.take_along_axis(a, q_idx[None, :, None, :, None], axis=3)
  return jnp.take_along_axis(a, v_idx[None, :, None, None, :], axis=4)


@flax.struct.dataclass
class InsertedInputs:
  """A prompt with one token inserted per row; ``index [B]`` is the new token's slot and
  ``extra`` the caller's other ``[B, S]`` arrays (labels, loss masks) shifted the same way."""

  input_ids: np.ndarray
  attention_mask: np.ndarray
  position_ids: np.ndarray
  index: np.ndarray
  extra: dict


def insert_token(input_ids, attention_mask, token_id: int, *, after_id: int,
                 extra: dict | None = None, fill: int = 0) -> InsertedInputs:
  """Inserts ``token_id`` in every row right after the row's last ``after_id`` token (the image
  placeholders; a row without one gets it before its first valid token).

  ``input_ids`` and the attention mask grow to ``[B, S + 1]`` together (padding stays where it
  was) and the position ids are rebuilt per row as ``cumsum(mask) - 1`` (contiguous, as
  :func:`keep_visual_tokens` with ``keep_positions=False``). Each ``extra`` array gets ``fill`` at
  the new slot. Runs on the host.
  """
  ids = np.asarray(jax.device_get(input_ids))
  valid = (np.ones_like(ids, bool) if attention_mask is None
           else np.asarray(jax.device_get(attention_mask)).astype(bool))
  b, s = ids.shape
  index = np.empty(b, np.int64)
  for r in range(b):
    anchors = np.nonzero((ids[r] == after_id) & valid[r])[0]
    first = np.nonzero(valid[r])[0]
    index[r] = anchors[-1] + 1 if len(anchors) else (first[0] if len(first) else s)

  def insert(a, value):
    a = np.asarray(jax.device_get(a))
    return np.stack([np.insert(a[r], index[r], value) for r in range(b)]) if b else \
        np.zeros((0, s + 1), a.dtype)

  new_valid = insert(valid, True)
  positions = np.maximum(np.cumsum(new_valid, 1) - 1, 0) * new_valid
  return InsertedInputs(insert(ids, token_id), new_valid.astype(np.int32),
                        positions.astype(np.int32), index,
                        {k: insert(v, fill) for k, v in (extra or {}).items()})
