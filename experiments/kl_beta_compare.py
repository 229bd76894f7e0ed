"""Seed 000: two ICD selection policies trained with different KL_BETA, compared end to end.

Every long part is cached in ``<workdir>/cache/<part>-<fingerprint>/`` (:mod:`jaxvlm.runcache`),
keyed by every setting and input file it depends on, so a re-run resumes and a changed setting
never reads a stale part. ``validate`` refuses bad settings before any work.

1. VLM (``vlm``): the HF folder ``vlm.model.path``, or a tiny real-format Qwen2.5-VL folder
   trained on ICL episodes of the synthetic ICD task
   (:func:`jaxvlm.methods.icd.icl.episode_batch_factory`) through
   :func:`jaxvlm.training.vlm.train_vlm`. Prompts are Lever-Plus's Qwen2.5-VL layout
   (``prompt.template``, ``prompt.system``; :class:`jaxvlm.methods.icd.icl.PromptFormat`).
2. Data: the demonstration pool, the policy's training queries (the last ``data.val_share`` of
   them held out for validation losses) and the test queries: synthetic ``label`` questions of
   one unseen mapping, or OK-VQA questions / annotations json + COCO image folders.
3. Embeddings (``embeddings``): CLIP image + question features through the CLIP image processor
   (any image size) and tokenizer, fused (``embedding.fusion``); ``embedding.center`` subtracts
   the pool mean (for the random tiny CLIP only: one direction dominates its features).
4. Candidates: ``sampler.num_candidates`` per query (``RandSampler`` by default).
5. InfoScore beams (``beams``) from the VLM's answer probability.
6. Policy (``policy``): supervised -> RCE, then GRPO once per KL_BETA (offline on the beams by
   default, ``train.grpo_mode``), each stage with its learning rate (``train.lr``), an Orbax
   checkpoint and a validation loss per epoch; ``curves.png`` shows the training curves.
7. ICL inference on the test queries, shots ``compare.shots``, with policy A and B at their GRPO
   epochs (``compare.epoch_selection``: ``fixed`` = ``compare.epochs``, ``val_loss`` = the
   epoch of lowest validation loss) and with ``RandSampler`` ICDs (the first S candidates).
8. ``jaxvlm compare-checkpoints`` (A vs B) and ``jaxvlm compare-indices`` (A vs B, every shot)
   into ``compare/``; ``report.md`` in seed 000's layout, ``metrics.json`` (with the seconds
   spent in each stage).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib
import ml_collections
import numpy as np

from jaxvlm import io, models, runcache
from jaxvlm import validate as checks
from jaxvlm.data import synthetic_vqa
from jaxvlm.data.vqa import read_vqa
from jaxvlm.errors import ConfigError, MissingFileError
from jaxvlm.eval.vqa_answers import image_of
from jaxvlm.methods import icd
from jaxvlm.methods.icd import icl, losses, samplers
from jaxvlm.methods.icd.policy import POLICIES
from jaxvlm.models.paths import check_model_path
from jaxvlm.run import experiment_entrypoint
from jaxvlm.tools import compare_checkpoints, compare_indices
from jaxvlm.training import vlm as vlm_training

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SOURCES = ("synthetic", "vqa")
SELECTIONS = ("fixed", "val_loss")


def validate(c: ml_collections.ConfigDict) -> None:
  """Refuses, before any work, every setting the run cannot use (one error naming the key)."""
  checks.choice(c, "data.source", SOURCES)
  checks.choice(c, "embedding.fusion", icd.FUSIONS)
  checks.choice(c, "sampler.name", samplers.SAMPLERS)
  checks.choice(c, "policy.name", POLICIES)
  checks.choice(c, "train.grpo_mode", icd.GRPO_MODES)
  checks.choice(c, "compare.epoch_selection", SELECTIONS)
  checks.positive(c, "data.max_new_tokens", "embedding.batch_size", "embedding.max_len",
                  "sampler.num_candidates", "infoscore.shots", "infoscore.beam_size",
                  "infoscore.batch_size", "runner.pad_to", "runner.feature_bucket",
                  "policy.dim", "policy.heads", "policy.temperature", "train.batch_size",
                  "train.supervised_epochs", "train.grpo_epochs", "train.group_size",
                  "train.sample_temperature", "train.lr.supervised", "train.lr.rce",
                  "train.lr.grpo", "compare.eval_batch_size", "compare.shots",
                  "compare.kl_betas")
  checks.in_range(c, "train.rce_epochs", 0)
  checks.in_range(c, "data.val_share", 0, 1, high_open=True)
  checks.in_range(c, "sampler.similar_share", 0, 1)
  checks.divisible(c, "policy.dim", "policy.heads")
  icd.PromptFormat(template=c.prompt.template, system=c.prompt.system)
  for beta in c.compare.kl_betas:
    losses.check_kl_beta(beta)
  if len(c.compare.kl_betas) != 2 or len(c.compare.epochs) != 2:
    raise ConfigError("compare.kl_betas / compare.epochs", (c.compare.kl_betas, c.compare.epochs),
                      "two KL_BETA values and two GRPO epochs (policy A, policy B)")
  k = c.sampler.num_candidates
  for key in ("compare.shots", "compare.index_shots", "infoscore.shots"):
    for s in checks.items(checks.get(c, key)):
      if not isinstance(s, int) or not 1 <= s <= k:
        raise ConfigError(key, s, f"shots in [1, sampler.num_candidates={k}]")
  if c.infoscore.beam_size < 2 and (c.train.rce_epochs or c.train.grpo_mode == "offline"):
    raise ConfigError("infoscore.beam_size", c.infoscore.beam_size,
                      ">= 2 (RCE and offline GRPO weigh several beams per query)")
  if c.compare.index_shots not in c.compare.shots:
    raise ConfigError("compare.index_shots", c.compare.index_shots,
                      f"one of compare.shots {tuple(c.compare.shots)}")
  for e in c.compare.epochs:
    if not 1 <= e <= c.train.grpo_epochs:
      raise ConfigError("compare.epochs", e, f"a GRPO epoch in [1, {c.train.grpo_epochs}]")
  a = c.train.adaptive_kl
  losses.AdaptiveKL(c.compare.kl_betas[0], *a.band, a.factor, *a.beta_bounds)
  if c.vlm.model.path:
    check_model_path(c.vlm.model.path, "vlm.model.path")
  if c.embedding.clip_path:
    check_model_path(c.embedding.clip_path, "embedding.clip_path")
  if c.data.source == "vqa":
    for split in ("pool", "test"):
      for kind, isdir in (("questions", False), ("annotations", False), ("images", True)):
        key = f"data.{split}_{kind}"
        path = checks.get(c, key)
        if not path or not (os.path.isdir(path) if isdir else os.path.isfile(path)):
          what = "image folder" if isdir else kind + " json"
          raise MissingFileError(path, f"{key} (an OK-VQA {what})")
  else:
    checks.positive(c, "data.num_pool", "data.num_train", "data.num_test")
    if k >= c.data.num_pool:
      raise ConfigError("sampler.num_candidates", k, f"< data.num_pool ({c.data.num_pool})")


# ------------------------------------------------------------------------------ data, models


def load_data(c) -> tuple[list, list, list, np.ndarray | None]:
  """(pool, training queries, test queries, pool index of each training query or None)."""
  d = c.data
  if d.source == "synthetic":
    split = lambda n, seed: icl.label_split(c.vlm.data, n, seed, d.label_seed)
    return split(d.num_pool, d.pool_seed), split(d.num_train, d.train_seed), split(
        d.num_test, d.test_seed), None
  pool = read_vqa(d.pool_questions, d.pool_annotations, d.pool_images, d.pool_limit or None)
  test = read_vqa(d.test_questions, d.test_annotations, d.test_images, d.test_limit or None)
  return pool, pool[:d.num_train], test, np.arange(min(d.num_train, len(pool)))


def _folder_files(path: str) -> list[str]:
  return [os.path.join(path, "config.json")] if path and os.path.isdir(path) else []


def cache_keys(c, n_fit: int | None = None) -> dict[str, dict]:
  """The settings each cached part is keyed by (with the model folders' config files): a part
  is reused only under equal settings of its own and of every part it is computed from."""
  vlm = {"vlm": c.vlm, "prompt": c.prompt}
  beams = dict(vlm, data=c.data, sampler=c.sampler, infoscore=c.infoscore,
               embedding=c.embedding if c.sampler.name != "random" else None, seed=c.seed)
  rewards = dict(beams, max_new_tokens=c.data.max_new_tokens, n_fit=n_fit)
  policy = dict(rewards, embedding=c.embedding, policy=c.policy, train=c.train,
                optimizer=c.optimizer, val_share=c.data.val_share, kl_betas=c.compare.kl_betas)
  return {"vlm": vlm, "beams": beams, "beam_rewards": rewards, "policy": policy,
          "icl": dict(policy, compare=c.compare)}


def load_vlm(c, cache: runcache.RunCache, fmt: icl.PromptFormat):
  """(VLM, processor): ``vlm.model.path``, or the tiny folder trained on ICL episodes."""
  if c.vlm.model.path:
    return vlm_training.load_model(c.vlm, c.vlm.model.path)
  folder = cache.entry("vlm", cache_keys(c)["vlm"])
  d = c.vlm.data
  texts = icl.tokenizer_texts(icl.label_split(d, d.num_train, d.train_seed, d.label_seed), fmt)
  words = [w for s in range(64) for w in synthetic_vqa.label_mapping(s, d.label_by,
                                                                     d.word_pool).values()]
  vlm_training.tiny_folder(c.vlm, os.path.join(folder, "init"), texts + words)
  trained = vlm_training.train_vlm(
      c.vlm, folder, batch_fn=lambda cfg, proc, m: icl.episode_batch_factory(cfg, proc, m, fmt))
  return vlm_training.load_model(c.vlm, trained.folder)


def clip_encoder(c, processor):
  """(CLIP model, image processor, tokenizer): the folder ``embedding.clip_path``, or a tiny
  random CLIP over the VLM's tokenizer (its EOS pools the text) with a CLIP image processor."""
  import transformers
  e = c.embedding
  if e.clip_path:
    return (models.load_pretrained(e.clip_path),
            transformers.CLIPImageProcessor.from_pretrained(e.clip_path),
            transformers.AutoTokenizer.from_pretrained(e.clip_path))
  tok = processor.tokenizer
  tiny = e.tiny.to_dict()
  hf = dict(tiny, model_type="clip", text_config=dict(
      tiny["text_config"], vocab_size=len(tok), eos_token_id=tok.eos_token_id))
  size = tiny["vision_config"]["image_size"]
  image_processor = transformers.CLIPImageProcessor(
      size={"shortest_edge": size}, crop_size={"height": size, "width": size})
  return models.from_config(hf, seed=c.seed), image_processor, tok


def embed_all(c, cache: runcache.RunCache, processor, splits: dict[str, list]
              ) -> dict[str, np.ndarray]:
  """Fused CLIP embeddings of each split (cached), centred on the pool mean if asked."""
  e = c.embedding
  settings = {"embedding": {k: e[k] for k in ("clip_path", "fusion", "max_len", "tiny")},
              "seed": c.seed, "data": c.data, "tokenizer": None if e.clip_path else c.vlm}
  folder = cache.entry("embeddings", settings, _folder_files(e.clip_path))
  encoder = []

  def compute(samples):
    if not encoder:
      encoder.extend(clip_encoder(c, processor))
    img, txt = icd.encode(*encoder, [image_of(s) for s in samples],
                          [s.question for s in samples], batch_size=e.batch_size,
                          max_len=e.max_len)
    return icd.fuse(img, txt, e.fusion)
  out = {name: icd.cached_embeddings(folder, name, [s.question_id for s in samples], {},
                                     lambda samples=samples: compute(samples))
         for name, samples in splits.items()}
  if e.center:
    mean = out["pool"].mean(0)
    out = {k: _unit(v - mean) for k, v in out.items()}
  return out


def _unit(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")
_ACTIVE: list["_Timer"] = []


def _on_event(event: str, seconds: float, **_) -> None:
  if event in COMPILE_EVENTS:
    for timer in _ACTIVE:
      timer.compile_now += seconds


class _Timer:
  """Wall seconds per stage, in order, and the part of them JAX spent tracing, lowering and
  compiling (``jax.monitoring`` compile events)."""

  registered = False

  def __init__(self):
    self.seconds: dict[str, float] = {}
    self.compile_seconds: dict[str, float] = {}
    self.compile_now = 0.0
    if not _Timer.registered:
      jax.monitoring.register_event_duration_secs_listener(_on_event)
      _Timer.registered = True

  def __call__(self, stage: str, fn, *args, **kwargs):
    t0, self.compile_now = time.perf_counter(), 0.0
    _ACTIVE.append(self)
    try:
      out = fn(*args, **kwargs)
    finally:
      _ACTIVE.remove(self)
    seconds = time.perf_counter() - t0
    self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
    self.compile_seconds[stage] = self.compile_seconds.get(stage, 0.0) + self.compile_now
    # in the log as it happens: a run stopped part way still shows what each stage cost
    print(f"[icd] {stage}: {seconds:.1f} s ({self.compile_now:.1f} s compiling)", flush=True)
    return out


# ------------------------------------------------------------------------------ policies


def beam_rewards(c, cache, settings, runner, train, pool, beams) -> np.ndarray:
  """``[N, M]`` reward (exact match + VQA accuracy) of every beam's ICDs (cached)."""
  found = cache.load("beam_rewards", settings)
  if found is not None:
    return np.asarray(found, np.float32)
  m = len(beams[0]["icd_indices"])
  rows = np.repeat(np.arange(len(beams)), m)
  idx = np.array([seq[:c.infoscore.shots] for b in beams for seq in b["icd_indices"]])
  out = icl.reward_fn(runner, train, pool, max_new_tokens=c.data.max_new_tokens)(rows, idx)
  out = np.asarray(out, np.float32).reshape(len(beams), m)
  cache.save("beam_rewards", settings, out.tolist())
  return out


def train_policies(c, folder: str, episodes: icd.Episodes, val: icd.Episodes, beams, val_beams,
                   rewards_fn, timer: _Timer) -> dict[str, Any]:
  """Supervised -> RCE once, then GRPO per KL_BETA; returns ``{"shared", "sft", "runs": {beta:
  trainer}}`` (the PolicyTrainers hold every epoch's checkpoint)."""
  t, p = c.train, c.policy
  kwargs = dict(dim=p.dim, heads=p.heads)
  if p.name == "pointer":
    kwargs.update(temperature=p.temperature, static_query=p.static_query)
  policy = icd.make_policy(p.name, episodes.query_emb.shape[1], seed=p.seed, **kwargs)
  common = dict(batch_size=t.batch_size, shots=c.infoscore.shots, seed=c.seed, progress=True,
                lr=t.lr.to_dict(), run_config=c.to_dict(),
                arch_config={"policy": p.to_dict(), "in_dim": int(episodes.query_emb.shape[1])})
  shared = icd.PolicyTrainer(policy, c.optimizer, workdir=os.path.join(folder, "shared"),
                             **common)
  shared.set_validation(val, val_beams)
  timer("supervised", shared.supervised, episodes, beams, t.supervised_epochs)
  sft = icd.copy_policy(shared.policy)
  if t.rce_epochs:
    timer("rce", shared.rce, episodes, beams, t.rce_epochs, tuple(t.rce_tau))
  offline = t.grpo_mode == "offline"
  rewards = timer("beam_rewards", rewards_fn) if offline else None
  a = t.adaptive_kl
  runs = {}
  for beta in c.compare.kl_betas:
    trainer = icd.PolicyTrainer(icd.copy_policy(shared.policy), c.optimizer,
                                workdir=os.path.join(folder, f"kl_{beta:g}"), **common)
    trainer.set_validation(val, val_beams)
    adaptive = (losses.AdaptiveKL(float(beta), *a.band, a.factor, *a.beta_bounds)
                if a.enabled else None)
    timer("grpo", trainer.grpo, episodes, t.grpo_epochs, kl_beta=float(beta), mode=t.grpo_mode,
          sft=sft, beams=beams, beam_rewards=rewards,
          reward_fn=None if offline else rewards_fn(), group_size=t.group_size, clip=t.clip,
          adv_clip=t.adv_clip, adaptive=adaptive, temperature=t.sample_temperature)
    runs[f"{beta:g}"] = trainer
  return {"shared": shared, "runs": runs}


def curves(c, trained, n_train: int) -> dict[str, Any]:
  """Per-epoch curves of every stage (train loss, validation loss; GRPO: KL, reward, beta)."""
  shared = trained["shared"]
  per = lambda stage: shared.steps_per_epoch(stage, n_train, c.train.group_size
                                             if c.train.grpo_mode == "on_policy"
                                             else c.infoscore.beam_size)
  out = {"supervised": shared.curves("supervised", per("supervised")),
         "rce": shared.curves("rce", per("rce")) if c.train.rce_epochs else []}
  for beta, trainer in trained["runs"].items():
    rows = trainer.curves("grpo", per("grpo"))
    path = os.path.join(trainer.workdir, "grpo", "records.json")
    records = {r["epoch"]: r for r in json.load(open(path))} if os.path.exists(path) else {}
    out[f"grpo kl_beta={beta}"] = [dict(r, kl_beta=records.get(r["epoch"], {}).get("kl_beta"))
                                   for r in rows]
  return out


def plot_curves(curves_by_stage: dict[str, list[dict]], path: str) -> None:
  """``path``: one panel per metric (loss, val_loss, kl, reward) over the stages' epochs."""
  keys = ("loss", "val_loss", "kl", "reward")
  fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3))
  for ax, key in zip(axes, keys):
    for stage, rows in curves_by_stage.items():
      xs = [r["epoch"] for r in rows if r.get(key) is not None]
      if xs:
        ax.plot(xs, [r[key] for r in rows if r.get(key) is not None], marker=".", label=stage)
    ax.set_xlabel("epoch")
    ax.set_title(key)
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


# ------------------------------------------------------------------------------ inference


def select(policy, query_emb, cand_emb, shots: int) -> tuple[np.ndarray, np.ndarray]:
  """Greedy candidate positions ``[N, shots]`` and the entropy of each shot's distribution."""
  q, k = jnp.asarray(query_emb), jnp.asarray(cand_emb)
  actions = icd.decode(policy, q, k, shots)
  return np.asarray(actions), np.asarray(icd.entropy(policy, q, k, actions))


def run_icl(c, out_dir: str, runner, test, pool, icd_by_shot: dict[int, np.ndarray],
            meta: dict) -> dict:
  """ICL inference per shot count (cached: ``metrics.json`` with the same ``meta`` is reused)."""
  path = os.path.join(out_dir, "metrics.json")
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    if saved.get("selection") == meta["selection"] and set(saved["shots"]) == {
        str(s) for s in icd_by_shot}:
      return saved
  results = {s: icl.icl_inference(runner, test, pool, idx, max_new_tokens=c.data.max_new_tokens)
             for s, idx in icd_by_shot.items()}
  return icl.write_icl_results(out_dir, test, results, icd_by_shot, meta)


def analysis(query_emb, pool_emb, test, pool, idx: np.ndarray, ent: np.ndarray | None,
             scores: list[float]) -> dict:
  """Selection diversity, similarity of the chosen ICDs to the query, policy entropy; on the
  synthetic task the share of same-class ICDs and the accuracy with / without one."""
  cos = np.einsum("nf,nsf->ns", _unit(query_emb), _unit(pool_emb)[idx])
  out = {"distinct_icds": int(len(np.unique(idx))),
         "distinct_share": float(len(np.unique(idx)) / idx.size),
         "distinct_sequences": int(len({tuple(r) for r in idx.tolist()})),
         "mean_query_icd_cosine": float(cos.mean()),
         "policy_entropy": None if ent is None else float(ent.mean()),
         "policy_entropy_per_shot": None if ent is None else ent.mean(0).tolist()}
  classes = [getattr(s, "label_class", None) for s in test]
  if all(k is not None for k in classes):
    same = np.array([[pool[j].label_class == k for j in row]
                     for k, row in zip(classes, idx.tolist())])
    has, acc = same.any(1), np.asarray(scores)
    out.update(same_class_share=float(same.mean()), with_same_class=int(has.sum()),
               accuracy_with_same_class=float(acc[has].mean()) if has.any() else None,
               accuracy_without_same_class=float(acc[~has].mean()) if (~has).any() else None)
  return out


def _scores(out_dir: str, shots: int) -> list[float]:
  with open(icl.predictions_path(out_dir, shots)) as f:
    return [r["accuracy"] for r in json.load(f)]


# ------------------------------------------------------------------------------ report


def _fmt(x, digits=4):
  return "-" if x is None else f"{x:.{digits}f}"


def report(c, m: dict) -> str:
  a, b = m["runs"]["A"], m["runs"]["B"]
  la, lb = f"KL_BETA={a['kl_beta']:g}", f"KL_BETA={b['kl_beta']:g}"
  w, ix = m["weights"], m["indices"]
  shots = [str(s) for s in c.compare.shots]
  acc = lambda r, s: r["icl"]["shots"][s]["accuracy"]
  rows = "\n".join(
      f"| {s} | {acc(a, s):.4f} | {acc(b, s):.4f} | {acc(b, s) - acc(a, s):+.4f} | "
      f"{acc(m['random'], s):.4f} | {max(acc(a, s), acc(b, s)) - acc(m['random'], s):+.4f} |"
      for s in shots)
  ident = "\n".join(f"| {s} | {ix[s]['num_samples']} | {ix[s]['identical']} | "
                    f"{ix[s]['different']} | {100 * ix[s]['identical_share']:.2f}% | "
                    f"{100 * ix[s]['same_set_share']:.2f}% |" for s in shots)
  an = lambda r, s, k: r["analysis"][s].get(k)
  names = (("A", la, a), ("B", lb, b), ("random", "RandSampler", m["random"]))
  ana = "\n".join(
      f"| {label} | {s} | {an(r, s, 'distinct_icds')} ({100 * an(r, s, 'distinct_share'):.1f}%) | "
      f"{an(r, s, 'distinct_sequences')} | {_fmt(an(r, s, 'mean_query_icd_cosine'))} | "
      f"{_fmt(an(r, s, 'same_class_share'), 3)} | {_fmt(an(r, s, 'policy_entropy'))} | "
      f"{_fmt(an(r, s, 'accuracy_with_same_class'), 3)} / "
      f"{_fmt(an(r, s, 'accuracy_without_same_class'), 3)} ({an(r, s, 'with_same_class')}) |"
      for _, label, r in names for s in shots)
  rel = [p["relative_diff"] for p in w["params"] if p["n_differ"]]
  top = "\n".join(f"| `{p['name']}` | {100 * p['share_differ']:.2f}% | {p['mean_abs_diff']:.3g} | "
                  f"{p['max_abs_diff']:.3g} | {100 * p['relative_diff']:.2f}% |"
                  for p in w["params"][:5])
  o = w["overall"]
  rec = lambda r: (f"KL={_fmt(r['grpo_at_epoch'].get('kl'), 5)}, mean reward="
                   f"{_fmt(r['grpo_at_epoch'].get('reward'))}, val loss="
                   f"{_fmt(r['grpo_at_epoch'].get('val_loss'))}")
  same = ix[str(c.compare.index_shots)]
  d, t = c.data, c.train
  data_note = (f"synthetic ICD task: `label` questions, per-class words of an unseen mapping "
               f"(seed {d.label_seed}); pool {d.num_pool}" if d.source == "synthetic" else
               f"OK-VQA json + COCO images: pool {m['sizes']['pool']}")
  data_note += (f", policy training queries {m['sizes']['train']} + {m['sizes']['val']} "
                "held out for validation losses")
  curve_rows = "\n".join(
      f"| {stage} | {r['epoch']} | {_fmt(r.get('loss'))} | {_fmt(r.get('val_loss'))} | "
      f"{_fmt(r.get('kl'), 5)} | {_fmt(r.get('reward'))} | {_fmt(r.get('kl_beta'), 4)} |"
      for stage, rows in m["curves"].items() for r in rows)
  time_rows = "\n".join(f"| {k} | {v:.1f} | {m['compile_seconds'][k]:.1f} |"
                        for k, v in m["seconds"].items())
  lr = t.lr
  return f"""# KL_BETA {a['kl_beta']:g} vs {b['kl_beta']:g} comparison report

## Settings

- **{la}**: GRPO epoch {a['epoch']}
- **{lb}**: GRPO epoch {b['epoch']}
- **Test samples**: {m['sizes']['test']} (full test), {same['num_samples']} (index comparison,
  shot {c.compare.index_shots})
- **Other parameters**: identical — VLM {m['vlm']}; {data_note}; embeddings: {m['embedding']};
  `{c.sampler.name}` sampler, {c.sampler.num_candidates} candidates per query; InfoScore beams
  of {c.infoscore.shots} shots x {c.infoscore.beam_size}; `{c.policy.name}` policy (dim
  {c.policy.dim}{", static query" if c.policy.static_query else ", state updated per pick"});
  supervised {t.supervised_epochs} (lr {lr.supervised:g}) + RCE {t.rce_epochs} epochs (lr
  {lr.rce:g}), shared, then {t.grpo_mode} GRPO {t.grpo_epochs} epochs per KL_BETA (lr
  {lr.grpo:g}, clip {t.clip}, adaptive KL {"on" if t.adaptive_kl.enabled else "off"}); epochs
  chosen: {c.compare.epoch_selection}

## Key findings

### 1. Checkpoint weights

- **{la}**: epoch {a['epoch']}, {rec(a)}
- **{lb}**: epoch {b['epoch']}, {rec(b)}
- **Weight differences** (`jaxvlm compare-checkpoints`):
  - {100 * o['share_differ']:.2f}% of the parameters differ ({o['n_differ']} of {o['num_elements']}
    elements, {o['params_differ']} of {o['num_params']} tensors)
  - mean difference: {o['mean_abs_diff']:.8f}
  - max difference: {o['max_abs_diff']:.8f}
  - relative difference ||a-b||/||a||: {100 * min(rel, default=0):.2f}-{
      100 * max(rel, default=0):.2f}% (median {100 * float(np.median(rel)) if rel else 0:.2f}%)

| parameter | differ | mean abs diff | max abs diff | relative diff |
|---|---|---|---|---|
{top}

### 2. Inference accuracy (official VQA accuracy)

| Shot Num | {la} | {lb} | difference | RandSampler ICDs | best policy - random |
|---|---|---|---|---|---|
{rows}

### 3. ICD index identity (`jaxvlm compare-indices`)

- **Test samples**: {same['num_samples']} (shot {c.compare.index_shots})
- **Identical**: {same['identical']} ({100 * same['identical_share']:.2f}%)
- **Different**: {same['different']} ({100 * (1 - same['identical_share']):.2f}%)
- **Identity rate**: {100 * same['identical_share']:.2f}%

| Shot Num | samples | identical | different | identity rate | same set (any order) |
|---|---|---|---|---|---|
{ident}

## Analysis

Selection diversity (distinct pool items chosen, share of all picks; distinct ICD sequences),
similarity of the chosen ICDs (mean cosine between the query's and the ICDs' fused embeddings;
on the synthetic task also the share of ICDs of the query's class, and the VQA accuracy of the
queries with / without at least one same-class ICD), policy entropy (mean over shots of the
entropy of the policy's distribution along its greedy selection, nats).

| run | shots | distinct ICDs | distinct sequences | query-ICD cosine | same class | entropy \
| acc with / without a same-class ICD (n with) |
|---|---|---|---|---|---|---|---|
{ana}

## Training curves

Per epoch: mean training loss, validation loss (RCE loss at tau = 1 on the held-out queries'
beams), and for GRPO the mean KL to the reference policy, the mean reward of the groups and the
KL_BETA used (`curves.png`).

| stage | epoch | loss | val loss | KL | reward | KL_BETA |
|---|---|---|---|---|---|---|
{curve_rows}

## Time per stage

Wall seconds per stage, and of them the seconds JAX spent tracing and compiling.

| stage | seconds | compiling |
|---|---|---|
{time_rows}

## Files

- ICL results: `icl/A/`, `icl/B/`, `icl/random/` (`shot<S>/predictions.json`, `metrics.json`)
- Checkpoints: `{m['policy_folder']}/kl_<beta>/grpo/checkpoints/<step>` (step = epoch x
  {m['steps_per_epoch']}); comparison `compare/checkpoints.json`
- Index comparison: `compare/indices_shot<S>.json`
"""


# ------------------------------------------------------------------------------ main


def main(config: ml_collections.ConfigDict, workdir: str) -> dict:
  c = config
  validate(c)
  workdir = os.path.abspath(workdir)  # Orbax (compare-checkpoints) takes absolute paths only
  cache = runcache.RunCache(os.path.join(workdir, "cache"))
  timer = _Timer()
  fmt = icl.prompt_format(c)
  vlm, processor = timer("vlm", load_vlm, c, cache, fmt)
  pool, train, test, train_in_pool = timer("data", load_data, c)
  emb = timer("embeddings", embed_all, c, cache, processor,
              {"pool": pool, "train": train, "test": test})
  s = c.sampler
  sampler = icd.make_sampler(s.name, emb["pool"], s.num_candidates, s.seed, s.similar_share)
  train_cands = sampler([q.question_id for q in train], exclude=train_in_pool,
                        query_emb=emb["train"])
  test_cands = sampler([q.question_id for q in test], query_emb=emb["test"])
  r = c.runner
  runner = icd.VLMRunner(vlm, processor, fmt, batch_size=c.infoscore.batch_size,
                         pad_to=r.pad_to, feature_bucket=r.feature_bucket)
  files = _folder_files(c.vlm.model.path) + _folder_files(c.embedding.clip_path)
  n_val = int(round(len(train) * c.data.val_share))
  n_fit = len(train) - n_val
  keys = cache_keys(c, n_fit)
  beam_dir = cache.entry("beams", keys["beams"], files)
  beams = timer("beam_search", icd.cached_beam_search, os.path.join(beam_dir, "beams.jsonl"),
                icd.answer_prob_fn(runner, train, pool), [q.question_id for q in train],
                np.arange(len(train)), train_cands, c.infoscore.shots, c.infoscore.beam_size)
  episodes = icd.Episodes(emb["train"][:n_fit], emb["pool"], train_cands[:n_fit])
  val = icd.Episodes(emb["train"][n_fit:], emb["pool"], train_cands[n_fit:])
  eval_runner = icd.VLMRunner(vlm, processor, fmt, batch_size=c.compare.eval_batch_size,
                              pad_to=r.pad_to, feature_bucket=r.feature_bucket)
  if c.train.grpo_mode == "offline":
    rewards_fn = lambda: beam_rewards(c, cache, keys["beam_rewards"], eval_runner, train, pool,
                                      beams[:n_fit])
  else:
    rewards_fn = lambda: icl.reward_fn(eval_runner, train, pool,
                                       max_new_tokens=c.data.max_new_tokens)
  policy_dir = cache.entry("policy", keys["policy"], files)
  trained = train_policies(c, policy_dir, episodes, val, beams[:n_fit], beams[n_fit:],
                           rewards_fn, timer)
  group = c.infoscore.beam_size if c.train.grpo_mode == "offline" else c.train.group_size
  per_epoch = trained["shared"].steps_per_epoch("grpo", n_fit, group)
  curve = curves(c, trained, n_fit)
  plot_curves(curve, os.path.join(workdir, "curves.png"))

  icl_dir = cache.entry("icl", keys["icl"], files)
  cand_emb = emb["pool"][test_cands]
  runs, icd_by_name = {}, {}
  for name, beta, fixed in zip("AB", c.compare.kl_betas, c.compare.epochs):
    trainer = trained["runs"][f"{beta:g}"]
    epoch = (fixed if c.compare.epoch_selection == "fixed"
             else trainer.best_epoch("grpo", per_epoch))
    policy = trainer.load("grpo", epoch * per_epoch)
    idx, ent = {}, {}
    for shots in c.compare.shots:
      actions, ent[shots] = select(policy, emb["test"], cand_emb, shots)
      idx[shots] = np.take_along_axis(test_cands, actions, axis=1)
    meta = {"selection": f"policy KL_BETA={beta:g} GRPO epoch {epoch}", "kl_beta": float(beta),
            "epoch": int(epoch)}
    out_dir = os.path.join(icl_dir, name)
    records = {x["epoch"]: x for x in curve[f"grpo kl_beta={beta:g}"]}
    runs[name] = {"kl_beta": float(beta), "epoch": int(epoch),
                  "grpo_at_epoch": records.get(epoch, {}),
                  "icl": timer("icl_inference", run_icl, c, out_dir, eval_runner, test, pool,
                               idx, meta),
                  "analysis": {str(k): analysis(emb["test"], emb["pool"], test, pool, idx[k],
                                                ent[k], _scores(out_dir, k)) for k in idx}}
    icd_by_name[name] = idx
  rand = {shots: test_cands[:, :shots] for shots in c.compare.shots}
  out_dir = os.path.join(icl_dir, "random")
  random_run = {"icl": timer("icl_inference", run_icl, c, out_dir, eval_runner, test, pool,
                             rand, {"selection": f"{s.name} sampler, first S candidates"}),
                "analysis": {str(k): analysis(emb["test"], emb["pool"], test, pool, v, None,
                                              _scores(out_dir, k)) for k, v in rand.items()}}

  cmp_dir = os.path.join(workdir, "compare")
  ck = lambda beta: os.path.join(policy_dir, f"kl_{beta:g}", "grpo", "checkpoints")
  ckpt_json = os.path.join(cmp_dir, "checkpoints.json")
  compare_checkpoints.main(argparse.Namespace(
      a=ck(c.compare.kl_betas[0]), b=ck(c.compare.kl_betas[1]),
      step_a=runs["A"]["epoch"] * per_epoch, step_b=runs["B"]["epoch"] * per_epoch, atol=0.0,
      top=10, json=ckpt_json))
  indices = {}
  for shots in c.compare.shots:
    out = os.path.join(cmp_dir, f"indices_shot{shots}.json")
    compare_indices.main(argparse.Namespace(
        a=icl.predictions_path(os.path.join(icl_dir, "A"), shots),
        b=icl.predictions_path(os.path.join(icl_dir, "B"), shots), top=10, json=out))
    with open(out) as f:
      indices[str(shots)] = {k: v for k, v in json.load(f).items() if k != "differences"}
  with open(ckpt_json) as f:
    weights = json.load(f)
  metrics = {
      "runs": runs, "random": random_run, "weights": weights, "indices": indices,
      "curves": curve, "seconds": timer.seconds,
      "compile_seconds": timer.compile_seconds, "steps_per_epoch": per_epoch,
      "policy_folder": os.path.relpath(policy_dir, workdir),
      "sizes": {"pool": len(pool), "train": n_fit, "val": n_val, "test": len(test)},
      "vlm": c.vlm.model.path or (f"tiny Qwen2.5-VL trained on ICL episodes "
                                  f"({c.vlm.train.steps} steps, cached)"),
      "embedding": (f"CLIP {c.embedding.clip_path}" if c.embedding.clip_path else
                    "tiny random CLIP") + f", fusion {c.embedding.fusion}"
                   + (", centred on the pool mean" if c.embedding.center else ""),
      "infoscore": {"mean_best_score": float(np.mean([b["scores"][0] for b in beams]))}}
  io.write_text(os.path.join(workdir, "report.md"), report(c, metrics))
  io.write_json(os.path.join(workdir, "metrics.json"), metrics)
  return {"accuracy": {name: {s: r["icl"]["shots"][s]["accuracy"] for s in r["icl"]["shots"]}
                       for name, r in (("A", runs["A"]), ("B", runs["B"]),
                                       ("random", random_run))},
          "index_identity": indices[str(c.compare.index_shots)]["identical_share"],
          "seconds": timer.seconds}


if __name__ == "__main__":
  experiment_entrypoint(main, "configs/icd.py:tiny")
