"""SGL shared vision (seed 002): a small VLM's attention over the visual tokens guides the
pruning of a large one; the seed's tables on one dataset.

Tables (``runs``): the hybrid checkpoint in reasoning modes normal / two_pass / prompt; shared
vision baseline / short_rationale / short_cot at ``sgl.prune_ratio``; the keep sweep with guide
vs random selection; early exit at one threshold; the attention-distribution comparison of
§4 (baseline vs ``runs.compare_mode``). Every run writes ``runs/<name>.json`` (per sample),
``.summary.json`` and, for guided runs, ``_stats.json``; runs resume from their finished batches.
The tiny preset first trains (and caches in the run folder) the decoder, then the guide on the
decoder's frozen vision tower, and builds the hybrid from the two saved folders. Writes
``metrics.json`` and ``report.md``.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import ml_collections

from jaxvlm import io, models
from jaxvlm import frozen
from jaxvlm.config import load_config
from jaxvlm.data import textvqa, vlm_batches
from jaxvlm.errors import ConfigError
from jaxvlm.methods import sgl
from jaxvlm.methods.sgl import guide as guide_lib, hybrid, pipeline, prompters, runner
from jaxvlm.run import experiment_entrypoint
from jaxvlm.training import vlm

GUIDE_MODES = {"baseline": {},
               "short_rationale": {"guide_text_mode": "short_rationale"},
               "short_cot": {"guide_reasoning_mode": "short_cot"},
               "explicit_cot": {"guide_reasoning_mode": "explicit_cot"}}


def _names(csv: str) -> list[str]:
  return [x for x in csv.split(",") if x]


def tiny_train_config(c: ml_collections.ConfigDict, role: str) -> ml_collections.ConfigDict:
  """The ``configs/sft.py:vlm_tiny`` config of the tiny decoder or guide."""
  r = c[role]
  t = load_config("configs/sft.py:vlm_tiny")
  t.unlock()
  t.seed = c.seed
  t.model.family = "internvl_chat"
  t.model.hf_config = r.hf_config.to_dict()
  for key in ("num_train", "train_seed", "image_size", "grid", "max_objects", "question_types",
              "label_seed"):
    t.data[key] = c.data[key]
  t.train.update(steps=r.steps, batch_size=r.batch_size)
  t.optimizer.lr = r.lr
  if role == "guide":
    t.optimizer.weight_decay = 0.0  # the frozen tower's AdamW updates are then exactly zero
  return t


def tiny_models(c: ml_collections.ConfigDict, workdir: str):
  """(guide, decoder, hybrid folder inputs) trained / cached under ``workdir``."""
  folders = {k: os.path.join(workdir, f"{k}_hf") for k in ("decoder", "guide", "hybrid")}
  dc = tiny_train_config(c, "decoder")
  drop = tuple(float(x) for x in _names(c.decoder.drop_keep_ratios))
  decoder, _, dhist = vlm.train_tiny_vlm(dc, os.path.join(workdir, "decoder"), loss_fn=(
      guide_lib.visual_dropout_loss(drop) if drop else None))
  gc = tiny_train_config(c, "guide")
  fresh = guide_lib.with_vision_tower(vlm.build_tiny_vlm(gc), decoder)
  guide, _, ghist = vlm.train_tiny_vlm(gc, os.path.join(workdir, "guide"),
                                       loss_fn=guide_lib.frozen_tower_loss, model=fresh)
  for name, model in (("decoder", decoder), ("guide", guide)):
    if not os.path.exists(os.path.join(folders[name], "config.json")):
      models.save_pretrained(model, folders[name])
  return guide, decoder, folders, {"decoder": dhist[-1:], "guide": ghist[-1:]}


def load_internvl2(path: str, trust_remote_code: bool = False):
  """(bf16 model, tokenizer) of an InternVL2 folder (``<IMG_CONTEXT>`` id from its tokenizer;
  ``trust_remote_code`` runs the folder's tokenizer code, which InternLM2-based folders need)."""
  from jaxvlm.data.images import image_token_id
  from jaxvlm.models.tokenizer import load_tokenizer
  tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
  return (models.load_pretrained(path, dtype="bfloat16", image_token_id=image_token_id(tokenizer)),
          tokenizer)


def load_samples(c: ml_collections.ConfigDict) -> list:
  d = c.data
  limit = d.limit or None
  if d.source == "synthetic":
    samples = vlm.synthetic_split(d, d.num_test, d.test_seed)
  elif d.source == "textvqa":
    samples = textvqa.read_textvqa(d.textvqa_json, d.image_dir, limit)
  elif d.source == "jsonl":
    samples = textvqa.read_vqa_jsonl(d.jsonl, limit)
  else:
    raise ConfigError("data.source", d.source, "'synthetic', 'textvqa' or 'jsonl'")
  if d.case_list:
    datasets = {name: textvqa.read_vqa_jsonl(path) for name, path in d.check_datasets.items()
                if path and name != d.dataset}
    datasets[d.dataset] = samples
    samples = runner.match_case_list(d.case_list, datasets, d.dataset)
  return samples


def _table(header: list[str], rows: list[list]) -> str:
  fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  return "\n".join(lines + ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows])


def main(config: ml_collections.ConfigDict, workdir: str) -> dict:
  c = config
  base = sgl.SGLSettings.from_mapping(c.sgl.to_dict())
  notes = {}
  if c.decoder.path:
    load = functools.partial(load_internvl2, trust_remote_code=c.trust_remote_code)
    (guide, gtok), (decoder, dtok) = load(c.guide.path), load(c.decoder.path)
    hybrid_path = os.path.join(workdir, "hybrid_hf")
    if c.hybrid.vision_path and not os.path.exists(os.path.join(hybrid_path, "config.json")):
      hybrid.build_hybrid(c.hybrid.vision_path, c.hybrid.lm_path, hybrid_path)
    hyb, htok = load(hybrid_path) if c.hybrid.vision_path else (None, None)
    make = functools.partial(prompters.InternVL2Prompter, max_num=c.data.max_num)
  else:
    guide, decoder, folders, notes["final_train_log"] = tiny_models(c, workdir)
    if not os.path.exists(os.path.join(folders["hybrid"], "config.json")):
      hybrid.build_hybrid(folders["decoder"], folders["guide"], folders["hybrid"])
    hyb = models.load_pretrained(folders["hybrid"])
    gtok = dtok = htok = vlm_batches.vlm_tokenizer()
    make = functools.partial(prompters.SyntheticPrompter, image_size=c.data.image_size)
  gp, dp = make(guide, gtok), make(decoder, dtok)
  samples = load_samples(c)
  shared = pipeline.shares_vision(guide, decoder)
  notes["shared_vision"] = shared
  out = os.path.join(workdir, "runs")
  run = functools.partial(runner.run_samples, out_dir=out, samples=samples,
                          batch_size=c.runs.batch_size, num_visual=gp.num_visual)
  metrics = {"notes": notes, "hybrid": {}, "guide_modes": {}, "keep": {}, "early_exit": {}}

  def guided(name: str, **changes) -> dict:
    s = dataclasses.replace(base, **changes)
    sgl.check_tokenizers(s, gtok, dtok)
    fn = lambda batch, step: pipeline.guided_batch(guide, decoder, gp, dp, batch, s,
                                                   shared=shared, step=step)
    with frozen.freeze(guide, decoder):
      return run(name, batch_fn=fn, extra={"settings": dataclasses.asdict(s)})

  if hyb is not None:
    hp = make(hyb, htok)
    for mode in _names(c.runs.hybrid_modes):
      s = dataclasses.replace(base, reasoning_mode=mode)
      fn = lambda batch, step, s=s: pipeline.single_model_batch(hyb, hp, batch, s)
      with frozen.freeze(hyb):
        metrics["hybrid"][mode] = run(f"hybrid_{mode}", batch_fn=fn)
  for mode in _names(c.runs.guide_modes):
    if mode not in GUIDE_MODES:
      raise ConfigError("runs.guide_modes", mode, f"names from {sorted(GUIDE_MODES)}")
    metrics["guide_modes"][mode] = guided(f"sv_{mode}", **GUIDE_MODES[mode])
  for keep in map(float, _names(c.runs.keeps)):
    for sel in _names(c.runs.selections) if keep < 1.0 else ["guide"]:
      metrics["keep"][f"{keep}_{sel}"] = guided(f"keep{keep}_{sel}", prune_ratio=keep,
                                                selection=sel)
  if c.runs.early_exit_threshold > 0:
    metrics["early_exit"] = guided(f"keep{c.runs.early_exit_keep}_exit",
                                   prune_ratio=c.runs.early_exit_keep,
                                   early_exit_threshold=c.runs.early_exit_threshold)
  cmp = c.runs.compare_mode
  if cmp and {"baseline", cmp} <= set(metrics["guide_modes"]):
    metrics["attention_comparison"] = runner.compare_stats(
        os.path.join(out, "sv_baseline_stats.json"), os.path.join(out, f"sv_{cmp}_stats.json"),
        c.runs.top_k)
  if not c.decoder.path:
    metrics["references"] = references(c, guide, decoder, samples)
  io.write_json(os.path.join(workdir, "metrics.json"), metrics)
  io.write_text(os.path.join(workdir, "report.md"), report(c, metrics))
  return {k: metrics[k] for k in ("notes",)} | {"report": os.path.join(workdir, "report.md")}


def references(c, guide, decoder, samples) -> dict:
  """Tiny preset: each model alone (all visual tokens) and the decoder on blank images."""
  tok = vlm_batches.vlm_tokenizer()
  ev = lambda m, s: vlm.evaluate_vqa(m, tok, s, batch_size=c.runs.batch_size,
                                     max_new_tokens=c.sgl.max_new_tokens)["accuracy"]
  return {"decoder": ev(decoder, samples), "guide": ev(guide, samples),
          "decoder_blank_images": ev(decoder, vlm.blank_images(samples))}


def report(c, m: dict) -> str:
  parts = [f"# SGL shared vision ({c.data.source})\n",
           f"Shared vision (tower weights compared): {m['notes']['shared_vision']}. "
           f"Prune layer {c.sgl.prune_layer}, prune ratio {c.sgl.prune_ratio} unless stated.\n"]
  if "references" in m:
    r = m["references"]
    parts.append("## References (all visual tokens)\n\n" + _table(
        ["model", "accuracy"], [["decoder", r["decoder"]], ["guide", r["guide"]],
                                ["decoder, blank images", r["decoder_blank_images"]]]) + "\n")
  if m["hybrid"]:
    parts.append("## Hybrid (vision of one checkpoint, LM + projector of another)\n\n" + _table(
        ["reasoning mode", "accuracy", "n"],
        [[k, v["accuracy"], v["n"]] for k, v in m["hybrid"].items()]) + "\n")
  row = lambda k, v: [k, v["accuracy"], v["mean_kept"], v["mean_visual"], v["mean_score"],
                      v["exit_share"], v["n"]]
  head = ["run", "accuracy", "kept tokens", "visual tokens", "mean exit score", "exit share", "n"]
  if m["guide_modes"]:
    parts.append("## Shared vision: guide modes\n\n" + _table(
        head, [row(k, v) for k, v in m["guide_modes"].items()]) + "\n")
  if m["keep"]:
    parts.append("## Keep sweep: guide attention vs random selection\n\n" + _table(
        head, [row(k, v) for k, v in m["keep"].items()]) + "\n")
  if m["keep"]:
    types = sorted(next(iter(m["keep"].values()))["per_type"])
    parts.append("## Keep sweep per question type\n\n" + _table(
        ["run", *types], [[k, *(v["per_type"][t] for t in types)] for k, v in m["keep"].items()])
        + "\n")
  if m["early_exit"]:
    e = m["early_exit"]
    parts.append(f"## Early exit (threshold {c.runs.early_exit_threshold}, keep "
                 f"{c.runs.early_exit_keep})\n\n" + _table(head, [row("early exit", e)]) + "\n")
  if "attention_comparison" in m:
    a = m["attention_comparison"]
    parts.append(f"## Did guide {c.runs.compare_mode} change attention? (baseline vs "
                 f"{c.runs.compare_mode})\n\n" + _table(["statistic", "value"],
                                                        [[k, v] for k, v in a.items()]) + "\n")
  return "\n".join(parts)


if __name__ == "__main__":
  experiment_entrypoint(main, "configs/sgl.py:tiny")
