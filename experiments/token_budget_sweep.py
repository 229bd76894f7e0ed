"""AdaLLaVA token-budget sweep (seed 004): accuracy, FLOPs and latency per budget.

Steps (each cached in the run folder, so a re-run resumes or loads):

1. ``<workdir>/base``: the tiny LLaVA (``model`` section; the ``configs/sft.py:vlm_tiny``
   recipe with ``base.train`` / ``base.optimizer``) trained on the synthetic VQA set through
   :func:`jaxvlm.training.vlm.train_tiny_vlm`; its full-compute accuracy is the reference row.
2. ``<workdir>/adallava`` (or ``adallava_checkpoint``): the base wrapped in AdaLLaVA
   (``model.adallava``), LoRA / full / heads-only per ``model.adallava.trainable``, fine-tuned on
   the Trainer with budgets sampled per batch (:mod:`jaxvlm.methods.adallava.training`).
3. The test questions as a VQAv2 folder: ``data.questions_json`` / ``annotations_json`` /
   ``image_dir`` when given, else the synthetic test split written to ``<workdir>/vqa_test``;
   both read by :func:`jaxvlm.data.vqa.read_vqa`.
4. Per budget of ``sweep.budgets``: exact match, official VQA accuracy, FLOPs per sample,
   latency (best of ``sweep.latency_repeats`` runs of the budgeted pipeline on one batch), mean
   generated length; samples in the
   lmms-eval jsonl layout in ``<workdir>/samples/``; results cached in ``<workdir>/sweep/``.

Writes ``metrics.json``, ``report.md``, ``acc_vs_flops.png`` and ``acc_vs_latency.png``. The
sweep runs the tiny LLaVA (``model.path`` empty); a real LLaVA folder is not wired in yet.
"""

from __future__ import annotations

import copy
import json
import os
import time

import matplotlib
import ml_collections
import scipy.stats
from flax import nnx

from jaxvlm import io
from jaxvlm.data import synthetic_vqa, vqa
from jaxvlm.errors import ConfigError
from jaxvlm.layers import lora
from jaxvlm.methods import adallava as ada
from jaxvlm.methods.adallava import evaluate, training
from jaxvlm.run import experiment_entrypoint
from jaxvlm.training import vlm

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def base_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The SFT config of the base VLM: the run's model without ``adallava``, ``base`` schedule."""
  c = copy.deepcopy(config)
  with c.unlocked():
    del c.model["adallava"]
    c.train, c.optimizer = c.base.train, c.base.optimizer
  return c


def ada_config(config: ml_collections.ConfigDict) -> ada.AdaConfig:
  a = config.model.adallava
  return ada.AdaConfig(a.latency_token_id, prefix_layers=a.prefix_layers, tau=a.tau,
                       latency_features=a.latency_features, quant_levels=a.quant_levels,
                       controller_hidden=a.controller_hidden, shared_plan=a.shared_plan,
                       granularity=a.granularity)


def build_model(config: ml_collections.ConfigDict, base_vlm) -> ada.AdaLlava:
  """AdaLlava around ``base_vlm`` with LoRA adapters when ``trainable == "lora"``."""
  a = config.model.adallava
  training.trainable_filter(a.trainable)  # validates the name before anything is built
  model = ada.AdaLlava(base_vlm, ada_config(config), nnx.Rngs(config.seed))
  if a.trainable == "lora":
    lora.apply_lora(model.vlm.language_model, tuple(a.lora.targets), a.lora.rank, a.lora.alpha,
                    a.lora.dropout, seed=config.seed)
  return model


def test_records(config: ml_collections.ConfigDict, workdir: str) -> tuple[list, list | None]:
  """(the evaluation questions read from a VQAv2 folder, the synthetic split it was written
  from or None for a real folder)."""
  d = config.data
  if d.questions_json:
    return vqa.read_vqa(d.questions_json, d.annotations_json, d.image_dir, d.limit or None), None
  root = os.path.join(workdir, "vqa_test")
  split = vlm.synthetic_split(d, d.num_test, d.test_seed)
  if not os.path.exists(os.path.join(root, "annotations.json")):
    synthetic_vqa.write_vqa_folder(split, root)
  return vqa.read_vqa(os.path.join(root, "questions.json"),
                      os.path.join(root, "annotations.json"), os.path.join(root, "images"),
                      d.limit or None), split


def train_models(config, workdir: str, records: list, synthetic: list | None):
  """(trained AdaLlava, tokenizer, base reference metrics, histories); each step cached."""
  t0 = time.perf_counter()
  ada_dir = config.adallava_checkpoint or os.path.join(workdir, "adallava")
  if os.path.isdir(os.path.join(ada_dir, "checkpoints")):
    training.check_checkpoint(ada_dir, "adallava_checkpoint" if config.adallava_checkpoint
                              else "workdir", config.model.adallava.granularity)
  base_dir = os.path.join(workdir, "base")
  base_vlm, tok, base_hist = vlm.train_tiny_vlm(base_config(config), base_dir)
  ref_path = os.path.join(base_dir, "reference.json")
  if not os.path.exists(ref_path):  # before the fine-tune donates the base arrays
    run = lambda samples: vlm.evaluate_vqa(base_vlm, tok, samples,
                                           batch_size=config.sweep.batch_size,
                                           max_new_tokens=config.data.max_new_tokens)
    r = run(records)
    blank = run(vlm.blank_images(synthetic))["accuracy"] if synthetic else None
    io.write_json(ref_path, {"vqa_accuracy": r["accuracy"], "exact_match": r["exact_match"],
                             "vqa_accuracy_blank_images": blank,
                             "steps": base_hist[-1]["step"] if base_hist else 0})
  reference = read_json(ref_path)
  model = build_model(config, base_vlm)
  model, _, hist = vlm.train_tiny_vlm(
      config, ada_dir, loss_fn=training.loss_fn, batch_fn=training.batch_factory, model=model,
      trainable=training.trainable_filter(config.model.adallava.trainable))
  print(f"[adallava] models ready in {time.perf_counter() - t0:.0f} s", flush=True)
  return model, tok, reference, {"base_history": base_hist, "adallava_history": hist}


def read_json(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


def sweep(config, workdir: str, model, tok, records: list) -> list[dict]:
  s = config.sweep
  batches = evaluate.prepare_batches(model, tok, records, s.batch_size)
  rows = []
  for budget in s.budgets:
    path = os.path.join(workdir, "sweep", f"{budget:.2f}.json")
    if os.path.exists(path):
      rows.append(read_json(path))
      continue
    metrics, samples = evaluate.evaluate_budget(
        model, tok, records, batches, float(budget), max_new_tokens=config.data.max_new_tokens,
        latency_repeats=s.latency_repeats)
    evaluate.write_samples(os.path.join(workdir, "samples", f"budget_{budget:.2f}.jsonl"),
                           samples)
    io.write_json(path, metrics)
    print(f"[adallava] budget {budget:.2f}: acc {metrics['vqa_accuracy']:.3f} "
          f"K {metrics['num_keep']} layers {metrics['layers']:.2f} "
          f"latency {1e3 * metrics['latency_s']:.1f} ms", flush=True)
    rows.append(metrics)
  return rows


def plot(rows: list[dict], key: str, scale: float, label: str, path: str) -> None:
  fig, ax = plt.subplots(figsize=(5, 3.6))
  x = [scale * r[key] for r in rows]
  for name in ("vqa_accuracy", "exact_match"):
    ax.plot(x, [r[name] for r in rows], "o-", label=name.replace("_", " "))
  for r, xi in zip(rows, x):
    ax.annotate(f"{r['budget']:.1f}", (xi, r["vqa_accuracy"]), fontsize=7,
                textcoords="offset points", xytext=(3, 3))
  ax.set(xlabel=label, ylabel="accuracy", title="AdaLLaVA token-budget sweep")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def tradeoff(rows: list[dict]) -> dict:
  """Whether accuracy, FLOPs and latency fall as the budget falls (rows in budget order)."""
  by = sorted(rows, key=lambda r: r["budget"])
  flops = [r["flops"] for r in by]
  return {"flops_strictly_increasing_with_budget": all(a < b for a, b in zip(flops, flops[1:])),
          "accuracy_lowest_minus_full": by[0]["vqa_accuracy"] - by[-1]["vqa_accuracy"],
          "latency_lowest_over_full": by[0]["latency_s"] / by[-1]["latency_s"],
          "cpu_time_lowest_over_full": by[0]["cpu_time_s"] / by[-1]["cpu_time_s"],
          "flops_lowest_over_full": by[0]["flops"] / by[-1]["flops"],
          "accuracy_budget_spearman": _spearman([r["budget"] for r in by],
                                                [r["vqa_accuracy"] for r in by])}


def _spearman(x, y) -> float:
  if len(set(y)) < 2:
    return float("nan")
  return float(scipy.stats.spearmanr(x, y).statistic)


def report(config, rows, reference, trend, notes, num_test) -> str:
  a, t = config.model.adallava, config.train
  table = "\n".join(
      f"| {r['budget']:.1f} | {r['num_keep']} | {r['layers']:.2f} | {r['exact_match']:.3f} | "
      f"{r['vqa_accuracy']:.3f} | {r['flops'] / 1e6:.3f} | {1e3 * r['latency_s']:.1f} | "
      f"{1e3 * r['cpu_time_s']:.0f} | "
      f"{r['gen_len']:.2f} | {r['empty_answers']:.3f} |" for r in rows)
  layers = config.model.hf_config.get("text_config", {}).get("num_hidden_layers", "?")
  blank = reference["vqa_accuracy_blank_images"]
  blank = "n/a" if blank is None else f"{blank:.3f}"
  units = ", ".join(f"{r['budget']:.1f}: {r['units']:.2f}" for r in rows)
  return f"""# AdaLLaVA token-budget sweep

Model: tiny LLaVA ({layers}-layer LM, 16 visual tokens per image) trained on the synthetic VQA
set ({notes['base_steps']} steps), wrapped in AdaLLaVA (granularity {a.granularity}, shared plan
{a.shared_plan}, prefix layers {a.prefix_layers}, tau {a.tau}, trainable: {a.trainable}) and
fine-tuned {t.steps} steps of batch {t.batch_size} with budgets sampled per batch. {num_test} held-out questions read from a VQAv2 folder
(questions / annotations json + images). Latency: best of {config.sweep.latency_repeats} runs
(median in metrics.json) of the whole budgeted pipeline (controller, K-of-N selection, prefill, decode of up to
{config.data.max_new_tokens} tokens) on one batch of {rows[0]['latency_batch']}, CPU.

## Sweep

| budget | K visual | layers run | exact match | VQA acc | MFLOPs / sample | latency ms / batch | CPU ms / batch | mean gen len | empty |
|---|---|---|---|---|---|---|---|---|---|
{table}

Reference: the base model (no AdaLLaVA, every token and layer): VQA accuracy
{reference['vqa_accuracy']:.3f} (exact match {reference['exact_match']:.3f}); with blank images
{blank} (what the answer prior alone gives).

## Trade-off

- FLOPs strictly increase with the budget: {trend['flops_strictly_increasing_with_budget']};
  lowest budget / full: FLOPs {trend['flops_lowest_over_full']:.3f}, latency
  {trend['latency_lowest_over_full']:.3f}, CPU time {trend['cpu_time_lowest_over_full']:.3f}.
- VQA accuracy at the lowest budget minus full: {trend['accuracy_lowest_minus_full']:+.3f};
  Spearman(budget, accuracy) = {trend['accuracy_budget_spearman']:.2f}.

![accuracy vs FLOPs](acc_vs_flops.png) ![accuracy vs latency](acc_vs_latency.png)

## Generation diagnosis (seed 004)

Per-sample jsonl in `samples/budget_<b>.jsonl` (lmms-eval layout: `doc_id`, `doc`, `target`,
`resps`, `filtered_resps`, plus `num_keep`, `layers`, `prompt_len`, `num_generated`, `gen_len`,
`first_token`, `flops`). Empty answers per budget are in the `empty` column above; answers whose
first token is EOS: {', '.join(f"{r['budget']:.1f}: {r['first_token_eos']:.3f}" for r in rows)}.
Units run per sample (KV-head groups, {rows[0]['groups']} per whole layer): {units}.
"""


def main(config: ml_collections.ConfigDict, workdir: str) -> dict:
  if config.model.path:
    raise ConfigError("model.path", config.model.path, "'' (the sweep trains and evaluates the "
                      "tiny LLaVA; loading a real LLaVA folder is not wired into it yet)")
  records, synthetic = test_records(config, workdir)
  model, tok, reference, hist = train_models(config, workdir, records, synthetic)
  rows = sweep(config, workdir, model, tok, records)
  trend = tradeoff(rows)
  plot(rows, "flops", 1e-6, "MFLOPs per sample", os.path.join(workdir, "acc_vs_flops.png"))
  plot(rows, "latency_s", 1e3, "latency (ms / batch)", os.path.join(workdir, "acc_vs_latency.png"))
  base_steps = reference["steps"]
  io.write_text(os.path.join(workdir, "report.md"),
                report(config, rows, reference, trend, {"base_steps": base_steps}, len(records)))
  summary = {"sweep": rows, "reference": reference, "tradeoff": trend}
  io.write_json(os.path.join(workdir, "metrics.json"), {**summary, **hist})
  return summary


if __name__ == "__main__":
  experiment_entrypoint(main, "configs/adallava.py:tiny")
