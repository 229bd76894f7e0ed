"""Teacher and student forward passes over fixed-slot batches.

A batch holds three right-aligned/left-aligned segments (numpy or JAX ``[B, L]`` int32):
``q_ids/q_mask`` (question, left-padded, ending with ``<bos>``-prefixed prompt), ``cot_ids/cot_mask``
(chain of thought, right-padded), ``ans_ids/ans_mask/ans_loss`` (answer delimiter + answer + eos,
right-padded; ``ans_loss`` marks the answer tokens after the delimiter). Positions skip padding
(``cumsum(mask) - 1``), so the padding between segments changes nothing but slot indices.

Teacher: ``Q + CoT + A`` in one pass, returning logits, the final (normed) states, every layer's
hidden states, the K/V as
cached (post-RoPE) and, on request, the attention of the answer tokens over the CoT keys
(recomputed from the hidden states for the answer queries only, pooled over each GQA group).
``attention_over="cot"`` (the paper's R-KV listing) normalises each answer query's softmax over the
valid CoT keys alone, so every row sums to 1 like the redundancy term; ``"sequence"`` takes the
probabilities of the full causal attention (question, CoT and answer keys) and slices the CoT
columns (rows then sum to less than 1).

Student (PCCoT Jacobi, ``whyNLP/PCCoT``): ``Q <bot> z_1..z_M <eot> A``. One pass over
``Q <bot>`` + M placeholder tokens fills the question cache; the initial latent embeddings are
``prj(h[<bot> .. z_{M-1}])``. Each of the T iterations runs all M latents in parallel against the
cached question KV (overwriting the latent slots) and updates ``emb = [emb_1, prj(h_1..h_{M-1})]``;
no stop-gradient between iterations. The answer is decoded against the last iteration's KV.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from jaxvlm.errors import ConfigError
from jaxvlm.layers.attention import attention, make_mask
from jaxvlm.layers.rope import apply_rope
from jaxvlm.methods.kava.rkv import pool_group


@flax.struct.dataclass
class TeacherOut:
  logits: jax.Array          # [B, S, V]
  hidden: tuple              # L+1 x [B, S, H]
  k: tuple                   # L x [B, S, Hkv, D] post-RoPE
  v: tuple
  answer_attention: Any      # L x [B, Hkv, A, C] or None
  last_hidden: Any = None    # [B, S, H] after the final norm (the logits' input)


@flax.struct.dataclass
class StudentOut:
  logits: jax.Array          # [B, 1 + La, V] over <eot> + answer segment
  hidden: tuple              # L+1 x [B, 1 + La, H]
  latent_k: tuple            # T x L x [B, M, Hkv, D]
  latent_v: tuple
  last_hidden: Any = None    # [B, 1 + La, H] after the final norm


def check_latents(num_latents: int, iterations: int) -> None:
  """M >= 1 latents and T >= 1 Jacobi iterations, else an error naming the config field."""
  if num_latents < 1:
    raise ConfigError("kava.num_latents", num_latents, "an int >= 1 (M)")
  if iterations < 1:
    raise ConfigError("kava.iterations", iterations, "an int >= 1 (T)")


def positions(mask: jax.Array) -> jax.Array:
  return jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0).astype(jnp.int32)


ATTENTION_OVER = ("cot", "sequence")


def teacher_forward(model, batch: dict, *, with_cot: bool = True, need_cache: bool = False,
                    need_attention: bool = False, pooling: str = "mean",
                    attention_over: str = "cot") -> TeacherOut:
  """``Q (+ CoT) + A`` through the LM (see the module docstring)."""
  if attention_over not in ATTENTION_OVER:
    raise ConfigError("kava.importance", attention_over, f"one of {ATTENTION_OVER}")
  lm = model.lm
  segs = ("q", "cot", "ans") if with_cot else ("q", "ans")
  ids = jnp.concatenate([jnp.asarray(batch[f"{s}_ids"]) for s in segs], 1)
  mask = jnp.concatenate([jnp.asarray(batch[f"{s}_mask"]) for s in segs], 1)
  b, s = ids.shape
  pos = positions(mask)
  if not need_cache:
    out = lm(ids, attention_mask=mask, position_ids=pos)
    return TeacherOut(out.logits, (), (), (), None, out.last_hidden_state)
  out = lm(ids, attention_mask=mask, position_ids=pos, cache=lm.init_cache(b, s),
           output_hidden_states=True)
  att = None
  if need_attention:
    lq, lc = batch["q_ids"].shape[1], batch["cot_ids"].shape[1]
    ans, cot = slice(lq + lc, s), slice(lq, lq + lc)
    if attention_over == "cot":  # CoT keys only (all precede the answer queries)
      keys = slice(lq, lq + lc)
      amask = jnp.asarray(batch["cot_mask"]).astype(bool)[:, None, None, :]
    else:
      keys = slice(0, s)
      amask = make_mask(jnp.arange(lq + lc, s), jnp.arange(s), mask, causal=True)
    cos, sin = lm.model.rope_tables(pos[:, ans])
    cfg = lm.config
    att = []
    for i, layer in enumerate(lm.model.layers):
      x = layer.input_layernorm(out.hidden_states[i][:, ans])
      q = layer.self_attn.q_proj(x).reshape(b, s - lq - lc, cfg.num_attention_heads, cfg.head_dim)
      q = apply_rope(q, cos, sin)
      k = out.cache.k[i][:, keys]
      _, probs = attention(q, k, k, amask, return_probs=True)
      probs = probs if attention_over == "cot" else probs[..., cot]
      att.append(pool_group(probs, cfg.num_key_value_heads, pooling))
    att = tuple(jax.lax.stop_gradient(a) for a in att)
  return TeacherOut(out.logits, out.hidden_states, out.cache.k, out.cache.v, att,
                    out.last_hidden_state)


def student_prefill(model, q_ids, q_mask, num_latents: int, max_len: int):
  """The question pass ``Q <bot> <lat>*M``: (cache at the first latent slot, initial latent
  embeddings ``[B, M, H]``, positions of the whole student sequence up to ``max_len``)."""
  lm = model.lm
  b, lq = q_ids.shape
  m = num_latents
  full_mask = jnp.concatenate([q_mask, jnp.ones((b, max_len - lq), q_mask.dtype)], 1)
  pos = positions(full_mask)
  tail = jnp.asarray([model.bot_id] + [model.latent_id] * m, jnp.int32)
  ids = jnp.concatenate([q_ids, jnp.broadcast_to(tail, (b, m + 1))], 1)
  mask = full_mask[:, :lq + 1 + m]
  out = lm(ids, attention_mask=mask, position_ids=pos[:, :lq + 1 + m],
           cache=lm.init_cache(b, max_len))
  emb = model.prj(out.last_hidden_state[:, lq:lq + m])
  return out.cache.replace(index=jnp.asarray(lq + 1, jnp.int32)), emb, pos


def jacobi(model, cache, emb, pos, start: int, iterations: int, keep_all: bool = True):
  """T Jacobi iterations of the M latents at slots ``start..start+M``; returns (cache after the
  last iteration, per-iteration latent K and V (only the last unless ``keep_all``))."""
  lm = model.lm
  b, m, _ = emb.shape
  ks, vs = [], []
  latent_pos = pos[:, start:start + m]
  for t in range(iterations):
    out = lm(inputs_embeds=emb, attention_mask=jnp.ones((b, m), jnp.int32),
             position_ids=latent_pos, cache=cache.replace(index=jnp.asarray(start, jnp.int32)))
    if keep_all or t == iterations - 1:
      ks.append(tuple(k[:, start:start + m] for k in out.cache.k))
      vs.append(tuple(v[:, start:start + m] for v in out.cache.v))
    if t < iterations - 1:
      emb = jnp.concatenate([emb[:, :1], model.prj(out.last_hidden_state)[:, :-1]], 1)
    cache = out.cache
  return cache, tuple(ks), tuple(vs)


def student_forward(model, batch: dict, num_latents: int, iterations: int,
                    keep_all: bool = False) -> StudentOut:
  """``Q <bot> z_1..z_M <eot> A`` with T Jacobi iterations (see the module docstring)."""
  check_latents(num_latents, iterations)
  q_ids, q_mask = jnp.asarray(batch["q_ids"]), jnp.asarray(batch["q_mask"])
  ans_ids, ans_mask = jnp.asarray(batch["ans_ids"]), jnp.asarray(batch["ans_mask"])
  b, lq = q_ids.shape
  m = num_latents
  total = lq + m + 2 + ans_ids.shape[1]
  cache, emb, pos = student_prefill(model, q_ids, q_mask, m, total)
  cache, ks, vs = jacobi(model, cache, emb, pos, lq + 1, iterations, keep_all)
  start = lq + 1 + m
  ids = jnp.concatenate([jnp.full((b, 1), model.eot_id, jnp.int32), ans_ids], 1)
  mask = jnp.concatenate([jnp.ones((b, 1), ans_mask.dtype), ans_mask], 1)
  out = model.lm(ids, attention_mask=mask, position_ids=pos[:, start:],
                 cache=cache.replace(index=jnp.asarray(start, jnp.int32)),
                 output_hidden_states=True)
  return StudentOut(out.logits, out.hidden_states, ks, vs, out.last_hidden_state)
