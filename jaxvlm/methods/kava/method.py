"""Method settings and the trainer's ``loss_fn`` for CoT, No-CoT, CODI, PCCoT and KAVA.

All five share one code path. ``cot``: CE over ``CoT + A`` given ``Q`` (the teacher pass alone).
``nocot``: CE over ``A`` given ``Q``. The latent methods add the student pass and combine the terms
``student_ce`` = CE(A | Z, Q), ``teacher_ce`` = CE(A, C | Q), ``codi`` (alpha1, hidden states at
the answer delimiter) and ``kv`` (alpha2, compressed teacher CoT KV vs the student's latent KV).
Default terms: ``pccot`` {student_ce, teacher_ce}; ``codi`` {.., codi} (its latents are refined
with T = M iterations, which equals sequential latent decoding); ``kava`` {.., codi, kv}.
``terms`` overrides the set (e.g. the ablation's PCCoT + CODI row).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp

from jaxvlm.errors import ConfigError
from jaxvlm.layers.rope import apply_rope
from jaxvlm.methods.kava import losses, passes, rkv

METHODS = ("cot", "nocot", "codi", "pccot", "kava")
TERMS = ("student_ce", "teacher_ce", "codi", "kv")
DEFAULT_TERMS = {"cot": ("teacher_ce",), "nocot": ("student_ce",),
                 "pccot": ("student_ce", "teacher_ce"),
                 "codi": ("student_ce", "teacher_ce", "codi"),
                 "kava": ("student_ce", "teacher_ce", "codi", "kv")}
KV_ITERATIONS = ("final", "all")
KV_ROPE = ("teacher", "student")


@dataclasses.dataclass(frozen=True)
class KavaConfig:
  """Method switches (``configs/kava.py`` ``kava`` block)."""
  method: str = "kava"
  num_latents: int = 24            # M
  iterations: int = 3              # T (Jacobi)
  terms: tuple[str, ...] = ()      # () = the method's default terms
  weights: tuple[tuple[str, float], ...] = (("student_ce", 1.0), ("teacher_ce", 1.0),
                                            ("codi", 10.0), ("kv", 1.0))
  codi_distance: str = "smooth_l1"
  codi_normalize: str = "loss"     # loss (CODI's code) | diff | none (losses.NORMALIZE)
  codi_offset: int = 0             # CODI position: the last delimiter token + this many tokens
                                   # (the experiment resolves "auto": resolve_codi_offset)
  kv_distance: str = "smooth_l1"
  kv_normalize: bool = True
  kv_iterations: str = "final"     # final | all
  kv_rope: str = "teacher"         # teacher (targets as cached) | student (moved to latent slots)
  select: str = "rkv"              # rkv | attention_only | cosine_only | right_crop
  lam: float = 0.1
  pooling: str = "mean"            # GQA-group pooling of the answer attention: mean | max
  importance: str = "cot"          # answer attention softmax over: cot (paper) | sequence

  def __post_init__(self):
    if self.method not in METHODS:
      raise ConfigError("kava.method", self.method, f"one of {METHODS}")
    passes.check_latents(self.num_latents, self.iterations)
    if not isinstance(self.codi_offset, int) or self.codi_offset < 0:
      raise ConfigError("kava.codi_offset", self.codi_offset, "'auto' or an int >= 0")
    for name in tuple(self.terms) + tuple(k for k, _ in self.weights):
      if name not in TERMS:
        raise ConfigError("kava.terms", name, f"loss names from {TERMS}")
    if self.method in ("cot", "nocot") and set(self.active_terms) != set(
        DEFAULT_TERMS[self.method]):
      raise ConfigError("kava.terms", self.terms, f"{DEFAULT_TERMS[self.method]} for method "
                        f"{self.method!r} (no latents)")
    if self.kv_iterations not in KV_ITERATIONS:
      raise ConfigError("kava.kv_iterations", self.kv_iterations, f"one of {KV_ITERATIONS}")
    if self.kv_rope not in KV_ROPE:
      raise ConfigError("kava.kv_rope", self.kv_rope, f"one of {KV_ROPE}")
    if self.select not in rkv.VARIANTS:
      raise ConfigError("kava.select", self.select, f"one of {rkv.VARIANTS}")
    if self.pooling not in rkv.POOLING:
      raise ConfigError("kava.pooling", self.pooling, f"one of {rkv.POOLING}")
    for field in ("codi_distance", "kv_distance"):
      if getattr(self, field) not in losses.DISTANCES:
        raise ConfigError(f"kava.{field}", getattr(self, field), f"one of {losses.DISTANCES}")
    if self.codi_normalize not in losses.NORMALIZE:
      raise ConfigError("kava.codi_normalize", self.codi_normalize, f"one of {losses.NORMALIZE}")
    if self.importance not in passes.ATTENTION_OVER:
      raise ConfigError("kava.importance", self.importance, f"one of {passes.ATTENTION_OVER}")

  @classmethod
  def from_mapping(cls, m: Mapping) -> "KavaConfig":
    d = dict(m)
    terms = d.get("terms", ())
    d["terms"] = tuple(t for t in (terms.split(",") if isinstance(terms, str) else terms) if t)
    d["weights"] = tuple(sorted(dict(d.get("weights", dict(cls.weights))).items()))
    return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})

  @property
  def active_terms(self) -> tuple[str, ...]:
    return tuple(self.terms) or DEFAULT_TERMS[self.method]

  @property
  def latent(self) -> bool:
    return self.method not in ("cot", "nocot")

  def weight(self, term: str) -> float:
    return dict(self.weights).get(term, 1.0)


def packed_ce(head, states, ids, mask, target, start: int = 0):
  """(CE, accuracy) of every token where ``target`` is 1, predicted from ``head`` (states ->
  logits) of the state at the last valid (``mask``) position before it, so segments may carry
  interior padding. Targets may lie only in columns ``start:``: only the states picked for them go
  through ``head`` (the LM head on ``[B, S - start]`` rows, not on every position: the
  question's logits are never formed)."""
  s = ids.shape[1]
  last = jax.lax.cummax(jnp.where(mask.astype(bool), jnp.arange(s), -1), axis=1)
  src = jnp.concatenate([jnp.full_like(last[:, :1], -1), last[:, :-1]], 1)[:, start:]
  picked = jnp.take_along_axis(states, jnp.maximum(src, 0)[..., None], 1)
  return losses.masked_ce(head(picked).astype(jnp.float32), ids[:, start:],
                          target[:, start:] * (src >= 0))


def _segments(batch, names):
  cat = lambda key: jnp.concatenate([jnp.asarray(batch[f"{n}_{key}"]) for n in names], 1)
  return cat("ids"), cat("mask")


def move_rope(model, k: jax.Array, delta: jax.Array) -> jax.Array:
  """Post-RoPE keys ``k [B, M, Hkv, D]`` rotated by ``delta [B, M, Hkv]`` more positions: a key
  cached at position ``p`` becomes the key of the same content at ``p + delta`` (RoPE rotations
  compose; rope types whose tables carry an attention scaling other than 1 are not supported)."""
  b, m, h, d = k.shape
  cos, sin = model.lm.model.rope_tables(delta.reshape(b, m * h))
  return apply_rope(k.reshape(b, m * h, 1, d), cos, sin).reshape(b, m, h, d)


def compressed_teacher_kv(cfg: KavaConfig, t: passes.TeacherOut, batch: dict, model=None):
  """The teacher CoT K/V compressed to M entries: (L x [B, M, Hkv, D], same for V).

  Kept entry ``j`` (of CoT index ``i_j``) is the target of latent ``j``. Its key is rotated at its
  teacher position ``n_q + i_j`` (``n_q`` valid question tokens); with ``kv_rope="student"`` it is
  moved to latent ``j``'s position ``n_q + 1 + j`` (``move_rope`` by ``1 + j - i_j``, needs
  ``model``), so the target differs from the student's key by content only, not by position.
  """
  lq, lc = batch["q_ids"].shape[1], batch["cot_ids"].shape[1]
  cot_valid = jnp.asarray(batch["cot_mask"]).astype(bool)
  ans_valid = jnp.asarray(batch["ans_mask"]).astype(bool)
  select = jax.vmap(lambda a, k, cv, av: rkv.select_kv_indices(
      a, k, cfg.num_latents, cfg.lam, variant=cfg.select, cot_valid=cv, answer_valid=av))
  ks, vs = [], []
  b, hkv = t.k[0].shape[0], t.k[0].shape[2]
  zeros = jnp.zeros((b, hkv, ans_valid.shape[1], lc))  # right_crop ignores the attention
  for layer in range(len(t.k)):
    k = jax.lax.stop_gradient(t.k[layer][:, lq:lq + lc])       # [B, C, Hkv, D]
    v = jax.lax.stop_gradient(t.v[layer][:, lq:lq + lc])
    att = zeros if t.answer_attention is None else t.answer_attention[layer]
    idx = select(att, k.transpose(0, 2, 1, 3), cot_valid, ans_valid).transpose(0, 2, 1)
    take = lambda x: jnp.take_along_axis(x, idx[..., None], axis=1)   # [B, M, Hkv, D]
    key = take(k)
    if cfg.kv_rope == "student":
      key = move_rope(model, key, 1 + jnp.arange(cfg.num_latents)[None, :, None] - idx)
    ks.append(key)
    vs.append(take(v))
  return tuple(ks), tuple(vs)


def kava_loss(cfg: KavaConfig, model, batch: dict, prefix_len: int) -> tuple[jax.Array, dict]:
  """Weighted sum of the active terms; aux holds each term and the answer token accuracy.

  ``prefix_len`` is the token count of the answer delimiter that opens every answer segment. The
  CODI loss compares the hidden states of every layer, the embedding output included (L + 1
  states, as CODI's code), at the delimiter's last token moved by ``cfg.codi_offset`` tokens:
  ``data.resolve_codi_offset`` gives the offset at which the compared state predicts the first
  non-whitespace answer token (1 with tokenizers that split the space before a number off, as
  LLaMA-3, Qwen2 and the char tokenizer do; CODI's code shifts by one for LLaMA and Qwen).
  """
  terms = cfg.active_terms
  aux, total = {}, 0.0
  ans_ids, ans_loss = jnp.asarray(batch["ans_ids"]), jnp.asarray(batch["ans_loss"])
  zeros_q = jnp.zeros_like(jnp.asarray(batch["q_mask"]))
  if not cfg.latent:
    segs = ("q", "cot", "ans") if cfg.method == "cot" else ("q", "ans")
    t = passes.teacher_forward(model, batch, with_cot=cfg.method == "cot")
    ids, mask = _segments(batch, segs)
    target = (jnp.concatenate([zeros_q, batch["cot_mask"], batch["ans_mask"]], 1)
              if cfg.method == "cot" else jnp.concatenate([zeros_q, ans_loss], 1))
    lq = batch["q_ids"].shape[1]
    ce, _ = packed_ce(model.lm.logits, t.last_hidden, ids, mask, target, lq)
    mid = [jnp.zeros_like(jnp.asarray(batch[f"{n}_mask"])) for n in segs[:-1]]
    _, aux["answer_accuracy"] = packed_ce(model.lm.logits, t.last_hidden, ids, mask,
                                          jnp.concatenate(mid + [ans_loss], 1),
                                          ids.shape[1] - ans_loss.shape[1])
    aux[terms[0]] = ce
    return cfg.weight(terms[0]) * ce, aux
  need_teacher = any(x in terms for x in ("teacher_ce", "codi", "kv"))
  s = passes.student_forward(model, batch, cfg.num_latents, cfg.iterations,
                             keep_all="kv" in terms and cfg.kv_iterations == "all")
  one = jnp.ones_like(ans_loss[:, :1])
  ce, aux["answer_accuracy"] = packed_ce(
      model.lm.logits, s.last_hidden, jnp.concatenate([one * model.eot_id, ans_ids], 1),
      jnp.concatenate([one, jnp.asarray(batch["ans_mask"])], 1),
      jnp.concatenate([0 * one, ans_loss], 1))
  parts = {"student_ce": ce}
  if need_teacher:
    t = passes.teacher_forward(model, batch, need_cache=True, need_attention="kv" in terms and
                               cfg.select != "right_crop", pooling=cfg.pooling,
                               attention_over=cfg.importance)
    if "teacher_ce" in terms:
      ids, mask = _segments(batch, ("q", "cot", "ans"))
      target = jnp.concatenate([zeros_q, batch["cot_mask"], batch["ans_mask"]], 1)
      parts["teacher_ce"] = packed_ce(model.lm.logits, t.last_hidden, ids, mask, target,
                                      batch["q_ids"].shape[1])[0]
    if "codi" in terms:
      d_s = prefix_len + cfg.codi_offset   # student slots: <eot> + answer segment
      if d_s > ans_ids.shape[1]:
        raise ConfigError("kava.codi_offset", cfg.codi_offset,
                          f"at most {ans_ids.shape[1] - prefix_len} (answer segment "
                          f"{ans_ids.shape[1]} tokens, delimiter {prefix_len})")
      d_t = batch["q_ids"].shape[1] + batch["cot_ids"].shape[1] + d_s - 1
      parts["codi"] = losses.codi_loss([h[:, d_t] for h in t.hidden],
                                       [h[:, d_s] for h in s.hidden],
                                       cfg.codi_distance, cfg.codi_normalize)
    if "kv" in terms:
      tk, tv = compressed_teacher_kv(cfg, t, batch, model)
      parts["kv"] = jnp.mean(jnp.stack([
          losses.kv_loss(tk, tv, sk, sv, cfg.kv_distance, cfg.kv_normalize)
          for sk, sv in zip(s.latent_k, s.latent_v)]))
  for name in terms:
    aux[name] = parts[name]
    total = total + cfg.weight(name) * parts[name]
  return total, aux


def make_loss_fn(cfg: KavaConfig, prefix_len: int):
  """``loss_fn(model, batch, rng)`` for :class:`jaxvlm.training.Trainer`."""
  def loss_fn(model, batch, rng):
    del rng
    return kava_loss(cfg, model, batch, prefix_len)
  return loss_fn
