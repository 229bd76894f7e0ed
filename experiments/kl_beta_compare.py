"""Seed 000: two ICD selection policies trained with different KL_BETA, compared end to end.

Steps (each cached in the run folder, so a re-run resumes):

1. VLM: the tiny Qwen2.5-VL trained on ICL episodes of the synthetic ICD task
   (``vlm/``, :func:`jaxvlm.methods.icd.icl.episode_batch_factory`), or the HF folder
   ``vlm.path`` with its tokenizer (:class:`~jaxvlm.methods.icd.icl.HFTextTokenizer`: the same
   plain interleaved few-shot prompt, no chat template).
2. Data: the demonstration pool, the policy's training queries and the test queries
   (synthetic ``label`` questions of one unseen mapping, or VQA json + COCO folders).
3. Embeddings (``embeddings/``): CLIP image + question features, fused (``embedding.fusion``).
   Without ``embedding.clip_path`` the CLIP is tiny and random: its features are not semantic,
   but equal questions give equal text features, and on the synthetic task the question names
   the class, so the fused embedding carries the class (``embedding.center`` subtracts the pool
   mean first: one common direction dominates a random tower's features).
4. Candidates: ``sampler.num_candidates`` per query (``RandSampler`` by default).
5. InfoScore beams (``infoscore/beams.jsonl``) from the VLM's answer probability.
6. Policy: supervised -> RCE (``policy/shared``), then GRPO once per KL_BETA
   (``policy/kl_<beta>/grpo``), an Orbax checkpoint (with its config) per epoch.
7. ICL inference on the test queries, shots ``compare.shots``, with policy A at GRPO epoch
   ``compare.epochs[0]``, policy B at ``compare.epochs[1]`` and with ``RandSampler`` ICDs (the
   first S candidates): ``icl/<name>/shot<S>/predictions.json`` + ``icl/<name>/metrics.json``.
8. ``jaxvlm compare-checkpoints`` (A vs B) and ``jaxvlm compare-indices`` (A vs B, every shot)
   into ``compare/``; ``report.md`` in seed 000's layout and ``metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import types
from typing import Any, Sequence

import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jaxvlm import io, models
from jaxvlm.data import vlm_batches
from jaxvlm.data.vqa import read_vqa
from jaxvlm.errors import ConfigError
from jaxvlm.methods import icd
from jaxvlm.methods.icd import icl, losses
from jaxvlm.models.clip.dual import clip_pixels
from jaxvlm.run import experiment_entrypoint
from jaxvlm.tools import compare_checkpoints, compare_indices
from jaxvlm.training.vlm import train_tiny_vlm


def check_config(c: ml_collections.ConfigDict) -> None:
  """Refuses bad settings before any work: KL_BETA < 0, shots outside [1, candidates], epochs
  outside [1, grpo_epochs]."""
  for beta in c.compare.kl_betas:
    losses.check_kl_beta(beta)
  if len(c.compare.kl_betas) != 2 or len(c.compare.epochs) != 2:
    raise ConfigError("compare.kl_betas / compare.epochs", (c.compare.kl_betas, c.compare.epochs),
                      "two KL_BETA values and two GRPO epochs (policy A, policy B)")
  k = c.sampler.num_candidates
  for s in (*c.compare.shots, c.compare.index_shots, c.infoscore.shots):
    icd.check_shots(s, k)
  if c.compare.index_shots not in c.compare.shots:
    raise ConfigError("compare.index_shots", c.compare.index_shots,
                      f"one of compare.shots {tuple(c.compare.shots)}")
  for e in c.compare.epochs:
    if not 1 <= e <= c.train.grpo_epochs:
      raise ConfigError("compare.epochs", e, f"a GRPO epoch in [1, {c.train.grpo_epochs}]")


# ------------------------------------------------------------------------------ data, models


def load_data(c) -> tuple[list, list, list, np.ndarray | None]:
  """(pool, training queries, test queries, pool index of each training query or None)."""
  d = c.data
  if d.source == "synthetic":
    split = lambda n, seed: icl.label_split(c.vlm.data, n, seed, d.label_seed)
    return split(d.num_pool, d.pool_seed), split(d.num_train, d.train_seed), split(
        d.num_test, d.test_seed), None
  if d.source == "vqa":
    pool = read_vqa(d.pool_questions, d.pool_annotations, d.pool_images, d.pool_limit or None)
    test = read_vqa(d.test_questions, d.test_annotations, d.test_images, d.test_limit or None)
    return pool, pool[:d.num_train], test, np.arange(min(d.num_train, len(pool)))
  raise ConfigError("data.source", d.source, "'synthetic' or 'vqa'")


def load_vlm(c, workdir: str):
  """(VLM, tokenizer): trained here (cached in ``vlm/``) unless ``vlm.path`` names a folder."""
  if c.vlm.path:
    from transformers import AutoTokenizer
    m = c.vlm.model
    return (models.load_pretrained(c.vlm.path, dtype=m.dtype, param_dtype=m.param_dtype),
            icl.HFTextTokenizer(AutoTokenizer.from_pretrained(c.vlm.path)))
  model, tokenizer, _ = train_tiny_vlm(c.vlm, os.path.join(workdir, "vlm"),
                                       batch_fn=icl.episode_batch_factory)
  return model, tokenizer


class _Images(Sequence):
  """Lazy images of samples (COCO files are read per embedding batch)."""

  def __init__(self, samples):
    self.samples = samples

  def __len__(self):
    return len(self.samples)

  def __getitem__(self, i):
    if isinstance(i, slice):
      return [vlm_batches.image_of(s) for s in self.samples[i]]
    return vlm_batches.image_of(self.samples[i])


def clip_encoder(c):
  """(CLIP model, tokenizer): ``embedding.clip_path`` or a tiny random one over the char
  tokenizer (``<vision_end>`` as its end-of-text token, where the text features are pooled)."""
  e = c.embedding
  if e.clip_path:
    from transformers import AutoTokenizer
    return models.load_pretrained(e.clip_path), AutoTokenizer.from_pretrained(e.clip_path)
  vlm_tokenizer = vlm_batches.vlm_tokenizer()
  eos = vlm_tokenizer.token_id("<vision_end>")
  tiny = e.tiny.to_dict()
  hf = dict(tiny, model_type="clip", text_config=dict(
      tiny["text_config"], vocab_size=vlm_tokenizer.vocab_size, eos_token_id=eos))
  tok = types.SimpleNamespace(bos_token_id=vlm_tokenizer.bos_token_id, eos_token_id=eos,
                              encode=vlm_tokenizer.encode)
  return models.from_config(hf, seed=c.seed), tok


def embed_all(c, workdir: str, splits: dict[str, list]) -> dict[str, np.ndarray]:
  """Fused CLIP embeddings of each split, cached as ``embeddings/<split>.npy`` + json."""
  e = c.embedding
  clip, tok = clip_encoder(c)
  size = clip.config.vision.image_size
  settings = {"fusion": e.fusion, "clip": e.clip_path or e.tiny.to_dict(), "seed": c.seed}

  def compute(samples):
    img, txt = icd.encode(clip, lambda ims: clip_pixels(np.stack(ims), size), tok,
                          _Images(samples), [s.question for s in samples],
                          batch_size=e.batch_size, max_len=e.max_len)
    return icd.fuse(img, txt, e.fusion)
  out = {name: icd.cached_embeddings(os.path.join(workdir, "embeddings"), name,
                                     [s.question_id for s in samples], settings,
                                     lambda samples=samples: compute(samples))
         for name, samples in splits.items()}
  if e.center:  # one direction dominates a random tower's features: centre on the pool mean
    mean = out["pool"].mean(0)
    out = {k: _unit(v - mean) for k, v in out.items()}
  return out


def _unit(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


# ------------------------------------------------------------------------------ policies


def train_policies(c, workdir: str, episodes: icd.Episodes, beams: list[dict], reward
                   ) -> dict[str, Any]:
  """Supervised -> RCE once, then GRPO per KL_BETA; returns ``{"shared", "runs": {beta: trainer,
  records}}`` (the PolicyTrainers hold every epoch's checkpoint)."""
  t, p = c.train, c.policy
  kwargs = dict(dim=p.dim, heads=p.heads)
  if p.name == "pointer":
    kwargs["temperature"] = p.temperature
  policy = icd.make_policy(p.name, episodes.query_emb.shape[1], seed=p.seed, **kwargs)
  common = dict(batch_size=t.batch_size, shots=c.infoscore.shots, seed=c.seed, progress=True,
                arch_config={"policy": p.to_dict(), "in_dim": int(episodes.query_emb.shape[1])})
  shared = icd.PolicyTrainer(policy, c.optimizer, workdir=os.path.join(workdir, "policy", "shared"),
                             run_config=c.to_dict(), **common)
  shared.supervised(episodes, beams, t.supervised_epochs)
  shared.rce(episodes, beams, t.rce_epochs, tuple(t.rce_tau))
  runs = {}
  for beta in c.compare.kl_betas:
    run_config = dict(c.to_dict(), kl_beta=float(beta))
    trainer = icd.PolicyTrainer(nnx.clone(shared.policy), c.optimizer,
                                workdir=os.path.join(workdir, "policy", f"kl_{beta:g}"),
                                run_config=run_config, **common)
    records = trainer.grpo(episodes, reward, t.grpo_epochs, group_size=t.group_size,
                           kl_beta=float(beta), clip=t.clip, adv_clip=t.adv_clip,
                           adaptive_kl_target=t.adaptive_kl_target or None,
                           temperature=t.sample_temperature)
    runs[f"{beta:g}"] = {"trainer": trainer, "records": _grpo_records(trainer, records)}
  return {"shared": shared, "runs": runs}


def _grpo_records(trainer: icd.PolicyTrainer, records: list[dict]) -> list[dict]:
  """Per-epoch GRPO records, kept in ``grpo_records.json`` (a resumed run returns only the
  epochs it trained)."""
  path = os.path.join(trainer.workdir, "grpo_records.json")
  old = json.load(open(path)) if os.path.exists(path) else []
  merged = {r["epoch"]: r for r in old + records}
  out = [merged[k] for k in sorted(merged)]
  io.write_json(path, out)
  return out


# ------------------------------------------------------------------------------ inference


def select(policy, query_emb, cand_emb, shots: int) -> tuple[np.ndarray, np.ndarray]:
  """Greedy candidate positions ``[N, shots]`` and the entropy of each shot's distribution."""
  q, k = jnp.asarray(query_emb), jnp.asarray(cand_emb)
  actions = icd.decode(policy, q, k, shots)
  return np.asarray(actions), np.asarray(icd.entropy(policy, q, k, actions))


def run_icl(c, out_dir: str, vlm, tokenizer, test, pool, icd_by_shot: dict[int, np.ndarray],
            meta: dict) -> dict:
  """ICL inference per shot count (cached: ``metrics.json`` with the same ``meta`` is reused)."""
  path = os.path.join(out_dir, "metrics.json")
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    if saved.get("selection") == meta["selection"] and set(saved["shots"]) == {
        str(s) for s in icd_by_shot}:
      return saved
  results = {s: icl.icl_inference(vlm, tokenizer, test, pool, idx,
                                  batch_size=c.compare.eval_batch_size,
                                  max_new_tokens=c.data.max_new_tokens)
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
  rec = lambda r: r["grpo_at_epoch"]
  same = ix[str(c.compare.index_shots)]
  d = c.data
  data_note = (f"synthetic ICD task: `label` questions, per-class words of an unseen mapping "
               f"(seed {d.label_seed}); pool {d.num_pool}, policy training queries "
               f"{d.num_train}" if d.source == "synthetic" else
               f"VQA json + COCO images: pool {m['sizes']['pool']}, training queries "
               f"{m['sizes']['train']}")
  return f"""# KL_BETA {a['kl_beta']:g} vs {b['kl_beta']:g} comparison report

## Settings

- **{la}**: GRPO epoch {a['epoch']}
- **{lb}**: GRPO epoch {b['epoch']}
- **Test samples**: {m['sizes']['test']} (full test), {same['num_samples']} (index comparison,
  shot {c.compare.index_shots})
- **Other parameters**: identical — VLM {m['vlm']}; {data_note}; embeddings: {m['embedding']};
  `{c.sampler.name}` sampler, {c.sampler.num_candidates} candidates per query; InfoScore beams
  of {c.infoscore.shots} shots x {c.infoscore.beam_size}; `{c.policy.name}` policy (dim
  {c.policy.dim}); supervised {c.train.supervised_epochs} + RCE {c.train.rce_epochs} epochs
  (shared), then GRPO {c.train.grpo_epochs} epochs per KL_BETA (group {c.train.group_size},
  clip {c.train.clip}, lr {c.optimizer.lr:g})

## Key findings

### 1. Checkpoint weights

- **{la}**: epoch {a['epoch']}, KL={_fmt(rec(a)['kl'], 5)}, mean reward={_fmt(rec(a)['reward'])}
- **{lb}**: epoch {b['epoch']}, KL={_fmt(rec(b)['kl'], 5)}, mean reward={_fmt(rec(b)['reward'])}
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

## Files

- ICL results: `icl/A/`, `icl/B/`, `icl/random/` (`shot<S>/predictions.json`, `metrics.json`)
- Checkpoints: `policy/kl_<beta>/grpo/checkpoints/<step>` (step = epoch x
  {m['steps_per_epoch']}); comparison `compare/checkpoints.json`
- Index comparison: `compare/indices_shot<S>.json`
"""


# ------------------------------------------------------------------------------ main


def main(config: ml_collections.ConfigDict, workdir: str) -> dict:
  c = config
  check_config(c)
  workdir = os.path.abspath(workdir)  # Orbax (compare-checkpoints) takes absolute paths only
  vlm, tokenizer = load_vlm(c, workdir)
  pool, train, test, train_in_pool = load_data(c)
  emb = embed_all(c, workdir, {"pool": pool, "train": train, "test": test})
  s = c.sampler
  sampler = icd.make_sampler(s.name, emb["pool"], s.num_candidates, s.seed, s.similar_share)
  train_cands = sampler([q.question_id for q in train], exclude=train_in_pool,
                        query_emb=emb["train"])
  test_cands = sampler([q.question_id for q in test], query_emb=emb["test"])
  prob_fn = icl.answer_prob_fn(vlm, tokenizer, train, pool, batch_size=c.infoscore.batch_size)
  beams = icd.cached_beam_search(os.path.join(workdir, "infoscore", "beams.jsonl"), prob_fn,
                                 [q.question_id for q in train], np.arange(len(train)),
                                 train_cands, c.infoscore.shots, c.infoscore.beam_size)
  episodes = icd.Episodes(emb["train"], emb["pool"], train_cands)
  reward = icl.reward_fn(vlm, tokenizer, train, pool, batch_size=c.compare.eval_batch_size,
                         max_new_tokens=c.data.max_new_tokens)
  trained = train_policies(c, workdir, episodes, beams, reward)
  per_epoch = trained["shared"].steps_per_epoch("grpo", len(train), c.train.group_size)

  cand_emb = emb["pool"][test_cands]
  runs, icd_by_name = {}, {}
  for name, beta, epoch in zip("AB", c.compare.kl_betas, c.compare.epochs):
    run = trained["runs"][f"{beta:g}"]
    policy = run["trainer"].load("grpo", epoch * per_epoch)
    idx, ent = {}, {}
    for shots in c.compare.shots:
      actions, ent[shots] = select(policy, emb["test"], cand_emb, shots)
      idx[shots] = np.take_along_axis(test_cands, actions, axis=1)
    meta = {"selection": f"policy KL_BETA={beta:g} GRPO epoch {epoch}", "kl_beta": float(beta),
            "epoch": int(epoch)}
    out_dir = os.path.join(workdir, "icl", name)
    runs[name] = {"kl_beta": float(beta), "epoch": int(epoch),
                  "grpo_at_epoch": next(r for r in run["records"] if r["epoch"] == epoch),
                  "icl": run_icl(c, out_dir, vlm, tokenizer, test, pool, idx, meta),
                  "analysis": {str(k): analysis(emb["test"], emb["pool"], test, pool, idx[k],
                                                ent[k], _scores(out_dir, k)) for k in idx},
                  "grpo": run["records"]}
    icd_by_name[name] = idx
  rand = {shots: test_cands[:, :shots] for shots in c.compare.shots}
  out_dir = os.path.join(workdir, "icl", "random")
  random_run = {"icl": run_icl(c, out_dir, vlm, tokenizer, test, pool, rand,
                               {"selection": f"{s.name} sampler, first S candidates"}),
                "analysis": {str(k): analysis(emb["test"], emb["pool"], test, pool, v, None,
                                              _scores(out_dir, k)) for k, v in rand.items()}}

  cmp_dir = os.path.join(workdir, "compare")
  ck = lambda beta: os.path.join(workdir, "policy", f"kl_{beta:g}", "grpo", "checkpoints")
  ckpt_json = os.path.join(cmp_dir, "checkpoints.json")
  compare_checkpoints.main(argparse.Namespace(
      a=ck(c.compare.kl_betas[0]), b=ck(c.compare.kl_betas[1]),
      step_a=c.compare.epochs[0] * per_epoch, step_b=c.compare.epochs[1] * per_epoch, atol=0.0,
      top=10, json=ckpt_json))
  indices = {}
  for shots in c.compare.shots:
    out = os.path.join(cmp_dir, f"indices_shot{shots}.json")
    compare_indices.main(argparse.Namespace(
        a=icl.predictions_path(os.path.join(workdir, "icl", "A"), shots),
        b=icl.predictions_path(os.path.join(workdir, "icl", "B"), shots), top=10, json=out))
    with open(out) as f:
      indices[str(shots)] = {k: v for k, v in json.load(f).items() if k != "differences"}
  with open(ckpt_json) as f:
    weights = json.load(f)
  metrics = {
      "runs": runs, "random": random_run, "weights": weights, "indices": indices,
      "steps_per_epoch": per_epoch,
      "sizes": {"pool": len(pool), "train": len(train), "test": len(test)},
      "vlm": c.vlm.path or (f"tiny Qwen2.5-VL trained on ICL episodes "
                            f"({c.vlm.train.steps} steps, cached in vlm/)"),
      "embedding": (f"CLIP {c.embedding.clip_path}" if c.embedding.clip_path else
                    "tiny random CLIP") + f", fusion {c.embedding.fusion}"
                   + (", centred on the pool mean" if c.embedding.center else ""),
      "infoscore": {"mean_best_score": float(np.mean([b["scores"][0] for b in beams]))}}
  io.write_text(os.path.join(workdir, "report.md"), report(c, metrics))
  io.write_json(os.path.join(workdir, "metrics.json"), metrics)
  return {"accuracy": {name: {s: r["icl"]["shots"][s]["accuracy"] for s in r["icl"]["shots"]}
                       for name, r in (("A", runs["A"]), ("B", runs["B"]),
                                       ("random", random_run))},
          "index_identity": indices[str(c.compare.index_shots)]["identical_share"]}


if __name__ == "__main__":
  experiment_entrypoint(main, "configs/icd.py:tiny")
