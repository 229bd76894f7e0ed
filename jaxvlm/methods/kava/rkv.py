"""R-KV compression of the teacher's chain-of-thought KV cache to ``num_keep`` entries per head.

Per KV head, with ``A [answer, CoT]`` the attention of the answer tokens over the CoT keys (already
pooled over the GQA group; by default each row is a softmax over the CoT keys alone, as in the
paper's listing, so importance and redundancy both sum to 1: ``passes.teacher_forward``
``attention_over``) and ``k [CoT, D]`` the post-RoPE CoT keys:

* importance ``I_i = mean_j A[j, i]`` (over valid answer tokens ``j``);
* redundancy ``R_i = softmax_i(-mean_{j != i} cos(k_i, k_j))`` (over valid CoT entries);
* score ``S = lam * I + (1 - lam) * R``; keep the top ``num_keep`` (ties: lower index), returned in
  position (ascending) order.

Variants (ablations): ``attention_only`` (S = I), ``cosine_only`` (S = R), ``right_crop`` (the last
``num_keep`` valid CoT entries). Decision for a CoT shorter than ``num_keep`` (C < M): every valid
entry is kept and the list is padded by repeating the last kept index, so the student's extra
latents are distilled towards the CoT's final entry (the result is then non-decreasing).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxvlm.errors import ConfigError, ShapeError

VARIANTS = ("rkv", "attention_only", "cosine_only", "right_crop")
POOLING = ("mean", "max")


def pool_group(probs: jax.Array, num_kv_heads: int, pooling: str = "mean") -> jax.Array:
  """``[..., Hq, A, C]`` attention -> ``[..., Hkv, A, C]`` by mean or max over each GQA group."""
  if pooling not in POOLING:
    raise ConfigError("kava.pooling", pooling, f"one of {POOLING}")
  *lead, hq, a, c = probs.shape
  grouped = probs.reshape(*lead, num_kv_heads, hq // num_kv_heads, a, c)
  return grouped.mean(-3) if pooling == "mean" else grouped.max(-3)


def rkv_scores(answer_attention: jax.Array, keys: jax.Array, lam: float = 0.1,
               cot_valid: jax.Array | None = None, answer_valid: jax.Array | None = None,
               variant: str = "rkv") -> jax.Array:
  """The score ``S [Hkv, C]`` of each CoT entry (``-inf`` at invalid entries)."""
  h, a, c = answer_attention.shape
  cot_valid = jnp.ones((c,), bool) if cot_valid is None else cot_valid.astype(bool)
  answer_valid = jnp.ones((a,), bool) if answer_valid is None else answer_valid.astype(bool)
  att = answer_attention.astype(jnp.float32)
  w = answer_valid.astype(jnp.float32)
  importance = jnp.einsum("hac,a->hc", att, w) / jnp.maximum(w.sum(), 1.0)
  k = keys.astype(jnp.float32)
  k = k / jnp.maximum(jnp.linalg.norm(k, axis=-1, keepdims=True), 1e-12)
  cos = jnp.einsum("hid,hjd->hij", k, k)
  others = cot_valid[None, :] & ~jnp.eye(c, dtype=bool)
  mean_cos = jnp.where(others, cos, 0.0).sum(-1) / jnp.maximum(others.sum(-1), 1)
  neg_inf = jnp.finfo(jnp.float32).min
  redundancy = jax.nn.softmax(jnp.where(cot_valid, -mean_cos, neg_inf), axis=-1)
  score = {"rkv": lam * importance + (1.0 - lam) * redundancy, "attention_only": importance,
           "cosine_only": redundancy,
           "right_crop": jnp.broadcast_to(jnp.arange(c, dtype=jnp.float32), (h, c))}[variant]
  return jnp.where(cot_valid, score, -jnp.inf)


def select_kv_indices(answer_attention: jax.Array, keys: jax.Array, num_keep: int,
                      lam: float = 0.1, *, variant: str = "rkv",
                      cot_valid: jax.Array | None = None,
                      answer_valid: jax.Array | None = None) -> jax.Array:
  """int32 ``[Hkv, num_keep]`` ascending CoT indices to keep (see the module docstring).

  Args:
    answer_attention: ``[Hkv, A, C]`` attention of answer queries over CoT keys (group-pooled).
    keys: ``[Hkv, C, D]`` CoT keys (post-RoPE).
    num_keep: M, the number of latents.
    lam: weight of the importance term.
    variant: one of ``VARIANTS``.
    cot_valid / answer_valid: optional ``[C]`` / ``[A]`` masks of real (non-pad) entries.
  """
  if variant not in VARIANTS:
    raise ConfigError("kava.select", variant, f"one of {VARIANTS}")
  if num_keep < 1:
    raise ConfigError("num_keep", num_keep, "an int >= 1 (the number of latents M)")
  if answer_attention.ndim != 3 or keys.ndim != 3 or keys.shape[:2] != (
      answer_attention.shape[0], answer_attention.shape[2]):
    raise ShapeError("keys", tuple(keys.shape),
                     f"[Hkv, C, D] matching answer_attention {tuple(answer_attention.shape)} "
                     "= [Hkv, A, C]")
  c = keys.shape[1]
  score = rkv_scores(answer_attention, keys, lam, cot_valid, answer_valid, variant)
  order = jnp.argsort(-score, axis=-1, stable=True)[:, :num_keep]  # ties -> lower index first
  picked = jnp.take_along_axis(score, order, -1)
  top = jnp.where(jnp.isfinite(picked), order, c)  # invalid picks (fewer than M valid) -> c
  top = jnp.pad(top, ((0, 0), (0, num_keep - top.shape[1])), constant_values=c)
  top = jnp.sort(top, axis=-1)
  last = jnp.max(jnp.where(top < c, top, 0), axis=-1, keepdims=True)
  return jnp.where(top < c, top, last).astype(jnp.int32)
