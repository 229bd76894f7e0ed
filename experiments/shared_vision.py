"""SGL shared vision (seed 002): a small VLM's attention over the visual tokens guides the
pruning of a large one; the seed's tables on one dataset.

Tables (``runs``): the hybrid checkpoint in reasoning modes normal / two_pass / prompt; shared
vision baseline / short_rationale / short_cot at ``sgl.prune_ratio``; the keep sweep with guide
vs random selection (paired differences with 95% intervals); early exit at one threshold against
the same keep without it (exit share, seconds saved); seconds per sample per stage; the
attention-distribution comparison of §4 (baseline vs ``runs.compare_mode``). Every run lives in
``runs/guided-<fingerprint>/`` or ``runs/hybrid-<fingerprint>/``
(:class:`jaxvlm.runcache.RunCache`: keyed by every setting that changes its results; runs of
equal settings share one folder) with ``results.json``, ``summary.json`` and, for guided runs,
``stats.json``; runs resume from their finished batches. The tiny preset first trains (and
caches in the run folder) the decoder, the guide on the decoder's frozen vision tower and the
hybrid's "1B" model, and builds the hybrid from the guide's tower and the "1B" LM + projector.
Writes ``metrics.json`` and ``report.md``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import types

import ml_collections

from jaxvlm import frozen, io, validate as checks
from jaxvlm.config import load_config
from jaxvlm.data import records, synthetic_vqa, textvqa, vqa
from jaxvlm.errors import ConfigError
from jaxvlm.eval import vqa_answers
from jaxvlm.eval.stats import mean_ci95
from jaxvlm.layers import attention
from jaxvlm.methods import sgl
from jaxvlm.methods.sgl import guide as guide_lib, hybrid, pipeline, runner, settings
from jaxvlm.models.chat import load_vlm, user_turn
from jaxvlm.run import experiment_entrypoint
from jaxvlm.runcache import RunCache
from jaxvlm.training import vlm

GUIDE_MODES = {"baseline": {},
               "short_rationale": {"guide_text_mode": "short_rationale"},
               "short_cot": {"guide_reasoning_mode": "short_cot"},
               "explicit_cot": {"guide_reasoning_mode": "explicit_cot"}}
SOURCES = ("synthetic", "internvl", "vqa", "textvqa", "jsonl")
# data fields each source needs (non-empty)
SOURCE_FIELDS = {"synthetic": (), "internvl": ("jsonl", "annotations", "data_root"),
                 "vqa": ("questions", "annotations", "image_dir"),
                 "textvqa": ("textvqa_json", "image_dir"), "jsonl": ("jsonl",)}


def _names(csv: str) -> list[str]:
  return [x.strip() for x in csv.split(",") if x.strip()]


def validate(c: ml_collections.ConfigDict) -> None:
  """Checks the whole config before any work; errors name the full key."""
  checks.choice(c, "data.source", SOURCES)
  checks.choice(c, "shared_vision", ("auto", "force", "off"))
  checks.choice(c, "attention_impl", attention.IMPLEMENTATIONS)
  for key in SOURCE_FIELDS[c.data.source]:
    if not c.data[key]:
      raise ConfigError(f"data.{key}", c.data[key], f"a path (data.source={c.data.source!r})")
  checks.in_range(c, "data.max_num", 1)
  checks.in_range(c, "data.limit", 0)
  checks.positive(c, "runs.batch_size", "runs.top_k", "sgl.max_new_tokens",
                  "sgl.guide_max_new_tokens")
  checks.in_range(c, "sgl.prune_ratio", 0, 1, low_open=True)
  checks.in_range(c, "sgl.prune_layer", 0, 1, high_open=True)
  checks.in_range(c, "sgl.consistency_token_ratio", 0, 1, low_open=True)
  checks.in_range(c, "sgl.early_exit_threshold", 0, 1)
  checks.in_range(c, "runs.early_exit_threshold", 0, 1)
  checks.in_range(c, "runs.early_exit_keep", 0, 1, low_open=True)
  for key, options in (("sgl.selection", settings.SELECTIONS),
                       ("sgl.guide_text_mode", settings.GUIDE_TEXT_MODES),
                       ("sgl.guide_reasoning_mode", settings.GUIDE_REASONING_MODES),
                       ("sgl.reasoning_mode", settings.REASONING_MODES)):
    checks.choice(c, key, options)
  for key, options in (("runs.selections", settings.SELECTIONS),
                       ("runs.guide_modes", tuple(GUIDE_MODES)),
                       ("runs.hybrid_modes", settings.REASONING_MODES)):
    for name in _names(c.runs[key.split(".")[1]]):
      if name not in options:
        raise ConfigError(key, name, f"comma-separated names from {list(options)}")
  for keep in _names(c.runs.keeps):
    try:
      value = float(keep)
    except ValueError:
      value = None
    if value is None or not 0 < value <= 1:
      raise ConfigError("runs.keeps", keep, "comma-separated keep ratios in (0, 1]")
  if c.data.source == "synthetic":
    checks.positive(c, "data.num_test", "data.num_train")
    for key in ("data.question_types", "data.test_question_types"):
      checks.choice(c, key, synthetic_vqa.ALL_QUESTION_TYPES)
  for role in ("decoder", "guide"):
    if not c[role].path:
      checks.positive(c, f"{role}.steps", f"{role}.batch_size", f"{role}.lr")
  if bool(c.decoder.path) != bool(c.guide.path):
    raise ConfigError("guide.path", c.guide.path, "a folder exactly when decoder.path is one")
  for ratio in _names(c.decoder.drop_keep_ratios):
    if not 0 < float(ratio) <= 1:
      raise ConfigError("decoder.drop_keep_ratios", ratio, "keep ratios in (0, 1]")
  settings.SGLSettings.from_mapping(c.sgl.to_dict())


def tiny_train_config(c: ml_collections.ConfigDict, role: str) -> ml_collections.ConfigDict:
  """The ``configs/sft.py:vlm_tiny`` config of a tiny model (``decoder``, ``guide``, ``hybrid``)."""
  r = c[role]
  t = load_config("configs/sft.py:vlm_tiny")
  t.unlock()
  t.seed = c.seed
  t.model.family = "internvl_chat"
  t.model.hf_config = r.hf_config.to_dict()
  for key in ("num_train", "train_seed", "image_size", "grid", "max_objects", "question_types",
              "label_seed"):
    t.data[key] = c.data[key]
  t.train.update(steps=r.steps, batch_size=r.batch_size, checkpoint_every=r.steps)
  t.optimizer.lr = r.lr
  if role == "guide":
    t.optimizer.weight_decay = 0.0  # the frozen tower's AdamW updates are then exactly zero
  return t


def tiny_models(c: ml_collections.ConfigDict, workdir: str) -> dict:
  """(model, processor, folder) of the tiny decoder, guide and hybrid, trained or loaded from
  ``workdir``."""
  dc = tiny_train_config(c, "decoder")
  drop = tuple(float(x) for x in _names(c.decoder.drop_keep_ratios))
  decoder = vlm.train_vlm(dc, os.path.join(workdir, "decoder"), loss_fn=(
      guide_lib.visual_dropout_loss(drop) if drop else None))
  gc = tiny_train_config(c, "guide")
  gdir = os.path.join(workdir, "guide")
  if os.path.exists(os.path.join(gdir, "model", "config.json")):
    guide = vlm.train_vlm(gc, gdir)  # the saved folder is loaded
  else:
    guide = vlm.train_vlm(gc, gdir, loss_fn=guide_lib.frozen_tower_loss,
                          wrap=lambda m: guide_lib.with_vision_tower(m, decoder.model))
  lm = vlm.train_vlm(tiny_train_config(c, "hybrid"), os.path.join(workdir, "hybrid_lm"))
  folder = os.path.join(workdir, "hybrid_hf")
  if not os.path.exists(os.path.join(folder, "config.json")):
    hybrid.build_hybrid(guide.folder, lm.folder, folder)
  out = {k: (t.model, t.processor, t.folder) for k, t in (("decoder", decoder), ("guide", guide))}
  out["hybrid"] = (*vlm.load_model(dc, folder), folder)
  out["history"] = {"decoder": decoder.history[-1:], "guide": guide.history[-1:],
                    "hybrid_lm": lm.history[-1:]}
  return out


def real_models(c: ml_collections.ConfigDict, workdir: str) -> dict:
  """(model, processor, folder) of the guide, decoder and (if configured) hybrid folders."""
  load = functools.partial(load_vlm, trust_remote_code=c.trust_remote_code, dtype="bfloat16",
                           attention_impl=c.attention_impl)
  out = {role: (*load(c[role].path), c[role].path) for role in ("guide", "decoder")}
  if c.hybrid.vision_path:
    folder = os.path.join(workdir, "hybrid_hf")
    if not os.path.exists(os.path.join(folder, "config.json")):
      hybrid.build_hybrid(c.hybrid.vision_path, c.hybrid.lm_path, folder)
    out["hybrid"] = (*load(folder), folder)
  return out


def _case_records(path: str) -> list:
  """(question_id, question) of every row of a check dataset's jsonl (for case-list matching)."""
  return [types.SimpleNamespace(question_id=records.integer(e, "question_id", path, f"line {n}"),
                                question=str(e.get("question", "")))
          for n, e in records.json_lines(path, "check dataset jsonl")]


def load_samples(c: ml_collections.ConfigDict) -> list:
  """The configured dataset, the case list matched against it whole, then ``data.limit``."""
  d = c.data
  if d.source == "synthetic":
    test = ml_collections.ConfigDict(d.to_dict())
    test.question_types = tuple(d.test_question_types)
    samples = vlm.synthetic_split(test, d.num_test, d.test_seed)
  elif d.source == "internvl":
    samples = textvqa.read_internvl_vqa(d.jsonl, d.annotations, d.data_root)
  elif d.source == "vqa":
    samples = vqa.read_vqa(d.questions, d.annotations, d.image_dir)
  elif d.source == "textvqa":
    samples = textvqa.read_textvqa(d.textvqa_json, d.image_dir)
  else:
    samples = textvqa.read_vqa_jsonl(d.jsonl)
  if d.case_list:
    datasets = {name: _case_records(path) for name, path in d.check_datasets.items()
                if path and name != d.dataset}
    datasets[d.dataset] = samples
    samples = runner.match_case_list(d.case_list, datasets, d.dataset)
  return samples[:d.limit] if d.limit else samples


def data_key(c: ml_collections.ConfigDict, samples) -> dict:
  """The data settings a run's results depend on: the source, its files, the case list, limit,
  tiles and a digest of the slice (question ids, questions, images)."""
  d = c.data
  rows = [[s.question_id, s.question, getattr(s, "image_path", "")] for s in samples]
  digest = hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]
  fields = ("source", "limit", "max_num", "case_list", "dataset") + SOURCE_FIELDS[d.source]
  if d.source == "synthetic":
    fields += ("num_test", "test_seed", "image_size", "grid", "max_objects",
               "test_question_types", "label_seed")
  return {**{k: d[k] for k in fields}, "n": len(samples), "slice_sha256": digest}


def data_files(c: ml_collections.ConfigDict) -> list[str]:
  d = c.data
  return [d[k] for k in SOURCE_FIELDS[d.source] if k != "data_root" and k != "image_dir"] + (
      [d.case_list] if d.case_list else [])


def paired(results_a: list[dict], results_b: list[dict]) -> dict:
  """Mean per-sample accuracy difference a - b (same samples) with its paired 95% interval."""
  a = {r["question_id"]: r["accuracy"] for r in results_a}
  return mean_ci95([a[r["question_id"]] - r["accuracy"] for r in results_b])


def _results(summary: dict) -> list[dict]:
  with open(os.path.join(summary["folder"], "results.json"), encoding="utf-8") as f:
    return json.load(f)


def main(config: ml_collections.ConfigDict, workdir: str) -> dict:
  c = config
  validate(c)
  base = sgl.SGLSettings.from_mapping(c.sgl.to_dict())
  notes = {}
  m = real_models(c, workdir) if c.decoder.path else tiny_models(c, workdir)
  notes["final_train_log"] = m.pop("history", None)
  (guide, gproc, gfolder), (decoder, dproc, dfolder) = m["guide"], m["decoder"]
  gp, dp = sgl.Prompter(gproc, c.data.max_num), sgl.Prompter(dproc, c.data.max_num)
  samples = load_samples(c)
  shared = pipeline.resolve_shared_vision(c.shared_vision, guide, decoder)
  notes.update(shared_vision=shared, shared_vision_mode=c.shared_vision,
               towers_equal=pipeline.shares_vision(guide, decoder))
  cache = RunCache(os.path.join(workdir, "runs"))
  common = {"data": data_key(c, samples), "batch_size": c.runs.batch_size,
            "models": {"guide": os.path.abspath(gfolder), "decoder": os.path.abspath(dfolder)},
            "shared_vision": {"mode": c.shared_vision, "shared": shared},
            "attention_impl": c.attention_impl}
  files = [gfolder, dfolder] + data_files(c)
  run = functools.partial(runner.run_samples, cache=cache, samples=samples,
                          batch_size=c.runs.batch_size, num_visual=gp.num_visual)
  metrics = {"notes": notes, "hybrid": {}, "guide_modes": {}, "keep": {}, "early_exit": {},
             "paired": {}}

  def guided(name: str, **changes) -> dict:
    s = dataclasses.replace(base, **changes)
    fn = lambda batch, step: pipeline.guided_batch(guide, decoder, gp, dp, batch, s,
                                                   shared=shared, step=step)
    with frozen.freeze(guide, decoder):
      return run("guided", settings=common | {"sgl": dataclasses.asdict(s)}, batch_fn=fn,
                 files=files) | {"name": name}

  if "hybrid" in m:
    hyb, hproc, hfolder = m["hybrid"]
    hp = sgl.Prompter(hproc, c.data.max_num)
    for mode in _names(c.runs.hybrid_modes):
      s = dataclasses.replace(base, reasoning_mode=mode)
      fn = lambda batch, step, s=s: pipeline.single_model_batch(hyb, hp, batch, s)
      key = {"data": common["data"], "batch_size": c.runs.batch_size,
             "model": os.path.abspath(hfolder), "sgl": dataclasses.asdict(s),
             "attention_impl": c.attention_impl}
      with frozen.freeze(hyb):
        metrics["hybrid"][mode] = run("hybrid", settings=key, batch_fn=fn,
                                      files=[hfolder] + data_files(c)) | {"name": f"hybrid_{mode}"}
  for mode in _names(c.runs.guide_modes):
    metrics["guide_modes"][mode] = guided(f"sv_{mode}", **GUIDE_MODES[mode])
  for keep in map(float, _names(c.runs.keeps)):
    for sel in _names(c.runs.selections) if keep < 1.0 else ["guide"]:
      metrics["keep"][f"{keep}_{sel}"] = guided(f"keep{keep}_{sel}", prune_ratio=keep,
                                                selection=sel)
    if {f"{keep}_guide", f"{keep}_random"} <= set(metrics["keep"]):
      metrics["paired"][f"{keep}"] = paired(_results(metrics["keep"][f"{keep}_guide"]),
                                            _results(metrics["keep"][f"{keep}_random"]))
  if c.runs.early_exit_threshold > 0:
    keep = c.runs.early_exit_keep
    exit_run = guided(f"keep{keep}_exit", prune_ratio=keep,
                      early_exit_threshold=c.runs.early_exit_threshold)
    plain = metrics["keep"].get(f"{float(keep)}_guide") or guided(f"keep{keep}_guide",
                                                                  prune_ratio=keep)
    metrics["early_exit"] = {"with_exit": exit_run, "without_exit": plain}
  cmp = c.runs.compare_mode
  if cmp and {"baseline", cmp} <= set(metrics["guide_modes"]):
    metrics["attention_comparison"] = runner.compare_stats(
        os.path.join(metrics["guide_modes"]["baseline"]["folder"], "stats.json"),
        os.path.join(metrics["guide_modes"][cmp]["folder"], "stats.json"), c.runs.top_k)
  if not c.decoder.path:
    metrics["references"] = references(c, guide, gproc, decoder, dproc, samples)
  io.write_json(os.path.join(workdir, "metrics.json"), metrics)
  io.write_text(os.path.join(workdir, "report.md"), report(c, metrics))
  return {"notes": notes, "report": os.path.join(workdir, "report.md")}


def references(c, guide, gproc, decoder, dproc, samples) -> dict:
  """Tiny preset: each model alone (all visual tokens) and the decoder on blank images."""
  conversation = lambda s, shots: user_turn([vqa_answers.image_of(s)],
                                            c.sgl.answer_prompt.format(question=s.question))
  ev = lambda model, proc, s: vqa_answers.evaluate_vqa(
      model, proc, s, conversation=conversation, batch_size=c.runs.batch_size,
      max_new_tokens=c.sgl.max_new_tokens)["accuracy"]
  return {"decoder": ev(decoder, dproc, samples), "guide": ev(guide, gproc, samples),
          "decoder_blank_images": ev(decoder, dproc, vqa_answers.blank_images(samples))}


def _ms(summary: dict) -> list[float]:
  return [1e3 * summary["warm_seconds_per_sample_all_stages"],
          1e3 * summary["warm_seconds_per_sample"].get("decoder", 0.0)]


def _table(header: list[str], rows: list[list]) -> str:
  fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  return "\n".join(lines + ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows])


def report(c, m: dict) -> str:
  notes = m["notes"]
  parts = [f"# SGL shared vision ({c.data.source})\n",
           f"Shared vision: {notes['shared_vision']} (mode {notes['shared_vision_mode']}, towers "
           f"equal on the weights: {notes['towers_equal']}). Prune layer {c.sgl.prune_layer}, "
           f"prune ratio {c.sgl.prune_ratio} unless stated; at most {c.data.max_num} tiles per "
           "image.\n"]
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
    types_ = sorted(next(iter(m["keep"].values()))["per_type"])
    parts.append("## Keep sweep per question type\n\n" + _table(
        ["run", *types_], [[k, *(v["per_type"][t] for t in types_)]
                           for k, v in m["keep"].items()]) + "\n")
  if m["paired"]:
    parts.append("## Guide minus random selection (paired, same samples)\n\n" + _table(
        ["keep", "accuracy difference", "95% interval", "n"],
        [[k, v["mean"], f"[{v['ci95'][0]:.4f}, {v['ci95'][1]:.4f}]", v["n"]]
         for k, v in m["paired"].items()]) + "\n")
  if m["early_exit"]:
    e, p = m["early_exit"]["with_exit"], m["early_exit"]["without_exit"]
    parts.append(f"## Early exit (threshold {c.runs.early_exit_threshold}, keep "
                 f"{c.runs.early_exit_keep})\n\n" + _table(
                     head + ["ms / sample (warm)", "decoder ms / sample (warm)"],
                     [row("with early exit", e) + _ms(e), row("without", p) + _ms(p)]) + "\n")
  timed = {**{f"mode {k}": v for k, v in m["guide_modes"].items()}, **m["keep"]}
  if m["early_exit"]:
    timed["early exit"] = m["early_exit"]["with_exit"]
  if timed:
    stages = list(pipeline.STAGES)
    parts.append("## Milliseconds per sample per stage (warm batches: each run's first batch, "
                 "which compiles, left out)\n\n" + _table(
                     ["run", *stages, "all"],
                     [[k, *(1e3 * v["warm_seconds_per_sample"].get(s, 0.0) for s in stages),
                       1e3 * v["warm_seconds_per_sample_all_stages"]]
                      for k, v in timed.items()]) + "\n")
  if "attention_comparison" in m:
    a = m["attention_comparison"]
    parts.append(f"## Did guide {c.runs.compare_mode} change attention? (baseline vs "
                 f"{c.runs.compare_mode})\n\n" + _table(["statistic", "value"],
                                                        [[k, v] for k, v in a.items()]) + "\n")
  return "\n".join(parts)


if __name__ == "__main__":
  experiment_entrypoint(main, "configs/sgl.py:tiny")
