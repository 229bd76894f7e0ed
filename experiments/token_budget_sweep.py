"""AdaLLaVA (seed 004): training, then the token-budget and latency-budget sweeps.

Steps (each cached, so a re-run resumes or loads):

1. Data. ``data.instruct_json`` / ``data.instruct_images`` (LLaVA instruction json) and the VQAv2
   files ``data.questions_json`` / ``annotations_json`` / ``image_dir``; when empty, the synthetic
   splits are written in those formats under ``<workdir>/data`` and read back through the same
   readers (:mod:`jaxvlm.data.llava_instruct`, :func:`jaxvlm.data.vqa.read_vqa`).
2. Base. ``model.path`` (an HF LLaVA-1.5 folder) is the base; without it a tiny real-format
   LLaVA folder is trained on the instruction data (``base.train`` / ``base.optimizer``,
   ``<workdir>/base``). Its full-compute accuracy (lmms-eval VQAv2 prompt) is the reference row.
3. AdaLLaVA. ``adallava_published`` (a published AdaLLaVA folder) is imported read-only;
   otherwise the base is wrapped in AdaLLaVA (``model.adallava``) and fine-tuned on the Trainer
   with a latency budget and a token budget sampled per batch (``<workdir>/adallava``).
4. Sweeps: ``sweep.token_budgets`` at latency ``sweep.latency_fixed``, ``sweep.latency_budgets``
   at token budget ``sweep.token_fixed``, and with ``sweep.grid`` every pair. Per point: lmms-eval
   ``exact_match`` (official VQA accuracy), ``strict_match``, FLOPs of the executed plan, latency,
   empty answers, first-token EOS; samples in the lmms-eval jsonl layout in ``<workdir>/samples/``.

Every cached part (reference, sweep points) lives in ``<workdir>/cache/<name>-<fingerprint>``,
keyed by every setting and input file it depends on (:class:`jaxvlm.runcache.RunCache`): a
changed setting computes anew. Writes ``metrics.json``, ``report.md`` and ``acc_vs_flops.png``.
"""

from __future__ import annotations

import copy
import os
import time

import matplotlib
import ml_collections
from flax import nnx

from jaxvlm import io, runcache
from jaxvlm import validate as checks
from jaxvlm.data import llava_instruct, sft, synthetic_vqa, vqa
from jaxvlm.errors import ConfigError, MissingFileError
from jaxvlm.eval import vqa_answers
from jaxvlm.layers import lora
from jaxvlm.methods import adallava as ada
from jaxvlm.methods.adallava import checkpoint, evaluate, training
from jaxvlm.models.paths import check_model_path
from jaxvlm.run import experiment_entrypoint
from jaxvlm.training import vlm

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BUDGET_KEYS = ("sweep.token_budgets", "sweep.latency_budgets", "sweep.latency_fixed",
               "sweep.token_fixed")


def validate(config: ml_collections.ConfigDict) -> None:
  """Refuses, before any work, every value the run cannot use (one error naming the key)."""
  a = config.model.adallava
  checks.choice(config, "model.adallava.granularity", ada.modeling.GRANULARITIES)
  checks.choice(config, "model.adallava.trainable", training.TRAINABLE)
  checks.choice(config, "model.family", ("llava",))
  for key in BUDGET_KEYS + ("model.adallava.min_budget", "model.adallava.min_token_budget"):
    checks.in_range(config, key, 0, 1, low_open=True)
  checks.positive(config, "model.adallava.tau", "model.adallava.latency_features",
                  "model.adallava.quant_levels", "model.adallava.controller_hidden",
                  "train.steps", "train.batch_size", "sweep.batch_size", "sweep.latency_repeats",
                  "data.max_new_tokens", "optimizer.lr")
  checks.in_range(config, "model.adallava.prefix_layers", 0)
  checks.in_range(config, "model.adallava.latency_token_id", 0)
  checks.in_range(config, "data.limit", 0)
  checks.in_range(config, "data.instruct_limit", 0)
  if a.trainable == "lora":
    checks.positive(config, "model.adallava.lora.rank", "model.adallava.lora.alpha")
  if config.model.path:
    check_model_path(config.model.path, "model.path")
    if config.model.hf_config:
      raise ConfigError("model.hf_config", config.model.hf_config.to_dict(),
                        "{} with model.path (the folder's config.json is the model)")
  else:
    checks.positive(config, "base.train.steps", "data.num_train", "data.num_test")
  for key in ("data.instruct_json", "data.questions_json", "data.annotations_json"):
    path = checks.get(config, key)
    if path and not os.path.isfile(path):
      raise MissingFileError(path, key)
  for key in ("data.instruct_images", "data.image_dir", "adallava_published"):
    path = checks.get(config, key)
    if path and not os.path.isdir(path):
      raise MissingFileError(path, key)
  if bool(config.data.questions_json) != bool(config.data.annotations_json) or bool(
      config.data.questions_json) != bool(config.data.image_dir):
    raise ConfigError("data.questions_json", config.data.questions_json, "given together with "
                      "data.annotations_json and data.image_dir (or all three empty)")
  if bool(config.data.instruct_json) != bool(config.data.instruct_images):
    raise ConfigError("data.instruct_json", config.data.instruct_json, "given together with "
                      "data.instruct_images (or both empty)")


# ----- data ---------------------------------------------------------------------------------------
def instruct_files(config, workdir: str) -> tuple[str, str]:
  """(instruction json, image folder): the configured ones, or the synthetic train split written
  as a LLaVA instruction file under ``<workdir>/data``. Its questions end with LLaVA-1.5's
  short-answer instruction, as ``llava_v1_5_mix665k.json`` writes VQAv2 / GQA items, which is
  also the lmms-eval VQAv2 prompt the sweeps ask (without it a tiny base trained on bare
  questions answers the evaluation prompt at 0.13 instead of 0.66)."""
  d = config.data
  if d.instruct_json:
    return d.instruct_json, d.instruct_images
  root = os.path.join(workdir, "data")
  path, images = os.path.join(root, "instruct.json"), os.path.join(root, "images")
  if not os.path.exists(path):
    train = vlm.synthetic_split(d, d.num_train, d.train_seed)
    llava_instruct.write_llava_instruct(path, images, [
        (f"train_{s.question_id}", s.image,
         [(f"{s.question}\n{evaluate.LMMS_VQAV2_PROMPT}", s.answer)]) for s in train])
  return path, images


def test_records(config, workdir: str) -> tuple[list, list | None]:
  """(the evaluation questions read from a VQAv2 folder, the synthetic split it was written
  from or None for a real folder)."""
  d = config.data
  if d.questions_json:
    return vqa.read_vqa(d.questions_json, d.annotations_json, d.image_dir, d.limit or None), None
  root = os.path.join(workdir, "data", "vqa_test")
  split = vlm.synthetic_split(d, d.num_test, d.test_seed)
  if not os.path.exists(os.path.join(root, "annotations.json")):
    synthetic_vqa.write_vqa_folder(split, root)
  return vqa.read_vqa(os.path.join(root, "questions.json"),
                      os.path.join(root, "annotations.json"), os.path.join(root, "images"),
                      d.limit or None), split


def data_files(config, workdir: str) -> list[str]:
  """The input files the results depend on (their identity keys the caches)."""
  d = config.data
  test = [d.questions_json, d.annotations_json] if d.questions_json else [
      os.path.join(workdir, "data", "vqa_test", n) for n in ("questions.json",
                                                             "annotations.json")]
  return [instruct_files(config, workdir)[0], *test]


# ----- models -------------------------------------------------------------------------------------
def ada_config(config: ml_collections.ConfigDict) -> ada.AdaConfig:
  a = config.model.adallava
  return ada.AdaConfig(a.latency_token_id, prefix_layers=a.prefix_layers, tau=a.tau,
                       latency_features=a.latency_features, quant_levels=a.quant_levels,
                       controller_hidden=a.controller_hidden, shared_plan=a.shared_plan,
                       granularity=a.granularity)


def build_model(config: ml_collections.ConfigDict, base_vlm) -> ada.AdaLlava:
  """AdaLlava around ``base_vlm`` with LoRA adapters when ``trainable == "lora"``."""
  a = config.model.adallava
  model = ada.AdaLlava(base_vlm, ada_config(config), nnx.Rngs(config.seed))
  if a.trainable == "lora":
    lora.apply_lora(model.vlm.language_model, tuple(a.lora.targets), a.lora.rank, a.lora.alpha,
                    a.lora.dropout, seed=config.seed)
  return model


def _with(config, **sections) -> ml_collections.ConfigDict:
  c = copy.deepcopy(config)
  with c.unlocked():
    for key, value in sections.items():
      c[key] = value
  return c


def base_model(config, workdir: str, files: tuple[str, str]):
  """(base VLM, processor, folder, training history): ``model.path`` as it is, or the tiny folder
  trained on the instruction data in ``<workdir>/base``."""
  if config.model.path:
    model, processor = vlm.load_model(config, config.model.path)
    return model, processor, config.model.path, []
  path, images = files
  batch_fn = lambda cfg, processor, model: sft.batch_factory(
      training.instruct_rows(processor, path, images, cfg.data.instruct_limit or None),
      cfg.train.batch_size)
  trained = vlm.train_vlm(_with(config, train=config.base.train,
                                optimizer=config.base.optimizer),
                          os.path.join(workdir, "base"), batch_fn=batch_fn)
  return trained.model, trained.processor, trained.folder, trained.history


def adallava_model(config, workdir: str, base_folder: str, files: tuple[str, str]):
  """(AdaLlava, processor, history): imported from ``adallava_published`` (read-only) or
  fine-tuned from the base folder in ``<workdir>/adallava``."""
  if config.adallava_published:
    model, processor = checkpoint.import_published(
        config.adallava_published, ada_config(config), base_folder, dtype=config.model.dtype,
        field="adallava_published")
    return model, processor, []
  ada_dir = os.path.join(workdir, "adallava")
  if os.path.isdir(os.path.join(ada_dir, "checkpoints")):
    training.check_checkpoint(ada_dir, "workdir", config.model.adallava.granularity)
  a = config.model.adallava
  unwrap = (lambda m: lora.merge_lora(m.vlm)) if a.trainable == "lora" else (lambda m: m.vlm)
  cfg = copy.deepcopy(config)
  with cfg.unlocked():
    cfg.model.path = base_folder
    cfg.model.hf_config = ml_collections.ConfigDict()
    cfg.data.instruct_json, cfg.data.instruct_images = files
  trained = vlm.train_vlm(cfg, ada_dir, loss_fn=training.loss_fn,
                          batch_fn=training.batch_factory,
                          wrap=lambda m: build_model(config, m), unwrap=unwrap,
                          trainable=training.trainable_filter(a.trainable))
  return trained.model, trained.processor, trained.history


# ----- sweeps -------------------------------------------------------------------------------------
def sweep_points(s: ml_collections.ConfigDict) -> dict[str, list[tuple[float, float]]]:
  """``{"token": [(latency, token)...], "latency": [...], "grid": [...]}`` (grid when asked)."""
  points = {"token": [(float(s.latency_fixed), float(t)) for t in s.token_budgets],
            "latency": [(float(l), float(s.token_fixed)) for l in s.latency_budgets]}
  if s.grid:
    points["grid"] = [(float(l), float(t)) for l in s.latency_budgets for t in s.token_budgets]
  return points


def result_settings(config) -> dict:
  """Every setting a sweep point's result depends on (the cache key, with the data files)."""
  return {"seed": config.seed, "model": config.model.to_dict(), "data": config.data.to_dict(),
          "base": config.base.to_dict(), "train": config.train.to_dict(),
          "optimizer": config.optimizer.to_dict(),
          "adallava_published": config.adallava_published,
          "sweep": {k: config.sweep[k] for k in ("batch_size", "latency_repeats")}}


def run_sweeps(config, workdir: str, model, processor, records: list, files: list[str]
               ) -> dict[str, list[dict]]:
  cache = runcache.RunCache(os.path.join(workdir, "cache"))
  settings = result_settings(config)
  points = sweep_points(config.sweep)
  batches, done = None, {}
  for pair in sorted({p for ps in points.values() for p in ps}):
    name = f"point_l{pair[0]:.2f}_t{pair[1]:.2f}"
    metrics = cache.load(name, {**settings, "point": pair}, files)
    if metrics is None:
      batches = batches or evaluate.prepare_batches(processor, records, config.sweep.batch_size)
      metrics, samples = evaluate.evaluate_point(
          model, processor, records, batches, latency_budget=pair[0], token_budget=pair[1],
          max_new_tokens=config.data.max_new_tokens, latency_repeats=config.sweep.latency_repeats)
      folder = cache.entry(name, {**settings, "point": pair}, files)
      evaluate.write_samples(os.path.join(folder, "samples_vqav2.jsonl"), samples)
      cache.save(name, {**settings, "point": pair}, metrics, files)
      print(f"[adallava] latency {pair[0]:.2f} token {pair[1]:.2f}: exact_match "
            f"{metrics['exact_match']:.3f} K {metrics['num_keep']:.0f} layers "
            f"{metrics['layers']:.2f} latency {1e3 * metrics['latency_s']:.1f} ms", flush=True)
    done[pair] = metrics
  return {axis: [done[p] for p in ps] for axis, ps in points.items()}


def reference(config, workdir: str, model, processor, records, synthetic, files) -> dict:
  """The base model's lmms-eval VQAv2 scores (every token and layer), cached."""
  cache = runcache.RunCache(os.path.join(workdir, "cache"))
  settings = {k: v for k, v in result_settings(config).items()
              if k not in ("train", "optimizer", "adallava_published")}
  settings["model"] = {k: v for k, v in settings["model"].items() if k != "adallava"}
  value = cache.load("reference", settings, files)
  if value is None:
    score = lambda samples: vqa_answers.evaluate_vqa(
        model, processor, samples, conversation=evaluate.lmms_vqav2_conversation,
        batch_size=config.sweep.batch_size, max_new_tokens=config.data.max_new_tokens)
    full = score(records)
    blank = score(vqa_answers.blank_images(synthetic))["accuracy"] if synthetic else None
    value = {"exact_match": full["accuracy"], "strict_match": full["strict_match"],
             "exact_match_blank_images": blank}
    cache.save("reference", settings, value, files)
  return value


# ----- report -------------------------------------------------------------------------------------
def plot(rows: dict[str, list[dict]], path: str) -> None:
  fig, ax = plt.subplots(figsize=(5, 3.6))
  for axis, style in (("token", "o-"), ("latency", "s--")):
    ax.plot([r["flops"] / 1e6 for r in rows[axis]], [r["exact_match"] for r in rows[axis]],
            style, label=f"{axis} budget sweep")
  ax.set(xlabel="MFLOPs per sample (executed)", ylabel="exact_match (VQA accuracy)",
         title="AdaLLaVA budget sweeps")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def monotone(rows: list[dict], key: str) -> dict:
  """Whether FLOPs and latency fall with ``key`` (rows sorted by it): no inversions."""
  by = sorted(rows, key=lambda r: r[key])
  flops = [r["flops"] for r in by]
  times = [r["latency_s"] for r in by]
  return {"flops_nondecreasing": all(a <= b for a, b in zip(flops, flops[1:])),
          "latency_inversions": [
              (by[i][key], by[j][key]) for i in range(len(by)) for j in range(i + 1, len(by))
              if flops[i] < flops[j] and times[i] > times[j]],
          "flops_lowest_over_full": flops[0] / flops[-1],
          "latency_lowest_over_full": times[0] / times[-1]}


def table(rows: list[dict]) -> str:
  head = ("| latency budget | token budget | K visual | layers run | exact_match | strict_match "
          "| MFLOPs / sample | latency ms / batch | empty | first-token EOS |\n"
          "|---|---|---|---|---|---|---|---|---|---|\n")
  return head + "\n".join(
      f"| {r['latency_budget']:.2f} | {r['token_budget']:.2f} | {r['num_keep']:.0f} | "
      f"{r['layers']:.2f} | {r['exact_match']:.3f} | {r['strict_match']:.3f} | "
      f"{r['flops'] / 1e6:.3f} | {1e3 * r['latency_s']:.1f} | {r['empty_answers']:.3f} | "
      f"{r['first_token_eos']:.3f} |" for r in rows)


def report(config, rows, ref, trends, num_test: int) -> str:
  a, s = config.model.adallava, config.sweep
  model = config.model.path or "tiny real-format LLaVA folder"
  blank = ref["exact_match_blank_images"]
  grid = f"\n## Grid\n\n{table(rows['grid'])}\n" if "grid" in rows else ""
  return f"""# AdaLLaVA budget sweeps

Model: {model} wrapped in AdaLLaVA (granularity {a.granularity}, shared plan {a.shared_plan},
prefix layers {a.prefix_layers}, trainable: {a.trainable}), {config.train.steps} fine-tune steps.
{num_test} questions read from a VQAv2 folder, lmms-eval VQAv2 prompt; `exact_match` is the
official VQA accuracy (lmms-eval), `strict_match` the normalised answer equal to the majority.
FLOPs: the plan the batch executed. Latency: best of {s.latency_repeats} runs of the whole budgeted
pipeline on one batch of {rows['token'][0]['latency_batch']}.

## Token budget sweep (latency budget {s.latency_fixed})

{table(rows['token'])}

## Latency budget sweep (token budget {s.token_fixed})

{table(rows['latency'])}
{grid}
## Trade-off

- Reference (base model, every token and layer): exact_match {ref['exact_match']:.3f},
  strict_match {ref['strict_match']:.3f}; with blank images {'n/a' if blank is None
  else f'{blank:.3f}'}.
- Token sweep: lowest / full FLOPs {trends['token']['flops_lowest_over_full']:.3f}, latency
  {trends['token']['latency_lowest_over_full']:.3f}; inversions (fewer FLOPs but slower):
  {trends['token']['latency_inversions'] or 'none'}.
- Latency sweep: lowest / full FLOPs {trends['latency']['flops_lowest_over_full']:.3f}, latency
  {trends['latency']['latency_lowest_over_full']:.3f}; inversions:
  {trends['latency']['latency_inversions'] or 'none'}.

![accuracy vs FLOPs](acc_vs_flops.png)

## Settings

{runcache.describe(result_settings(config))}
"""


def main(config: ml_collections.ConfigDict, workdir: str) -> dict:
  validate(config)
  t0 = time.perf_counter()
  instruct = instruct_files(config, workdir)
  records, synthetic = test_records(config, workdir)
  files = data_files(config, workdir)
  base, processor, base_folder, base_hist = base_model(config, workdir, instruct)
  ref = reference(config, workdir, base, processor, records, synthetic, files)
  model, processor, hist = adallava_model(config, workdir, base_folder, instruct)
  print(f"[adallava] models ready in {time.perf_counter() - t0:.0f} s", flush=True)
  rows = run_sweeps(config, workdir, model, processor, records, files)
  trends = {"token": monotone(rows["token"], "token_budget"),
            "latency": monotone(rows["latency"], "latency_budget")}
  plot(rows, os.path.join(workdir, "acc_vs_flops.png"))
  io.write_text(os.path.join(workdir, "report.md"),
                report(config, rows, ref, trends, len(records)))
  summary = {"sweeps": rows, "reference": ref, "tradeoff": trends}
  io.write_json(os.path.join(workdir, "metrics.json"),
                {**summary, "base_history": base_hist, "adallava_history": hist})
  return summary


if __name__ == "__main__":
  experiment_entrypoint(main, "configs/adallava.py:tiny")
