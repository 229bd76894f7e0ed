"""KAVA ablation: trains the rows of seed 003's tables and evaluates them on held-out problems.

Rows (``ablation.rows``; each is the config with a few overrides, see ``ROWS``): the baselines
CoT, No-CoT, CODI, PCCoT and KAVA; the ablation PCCoT -> + CODI -> + KV (right-crop compression,
raw distances) -> + R-KV -> KAVA full (+ layer-wise std normalisation), and PCCoT + KV (KAVA
without CODI: the KV term's own effect); and full fine-tuning instead of LoRA for CoT, No-CoT,
PCCoT and KAVA; KAVA with KV supervision on every Jacobi iteration (dense, seed 003's "W3");
optional rows ``kava_seqnorm`` (R-KV importance normalised over the whole sequence) and
``kava_special`` (the ``<bot>`` / ``<eot>`` / latent embedding rows train too).

Data (``data.source``): ``arithmetic`` (the tiny preset), ``gsm8k_aug`` (files) or
``synthetic_aug`` (``jaxvlm.data.synthetic_gsm8k_aug`` word problems written as GSM8K-AUG jsonl
into the run cache and read back through ``gsm8k.read_aug``). Training records over a segment
budget are dropped or truncated per ``data.over_budget``; the report states the counts.

Caching (``jaxvlm.runcache``, under ``<workdir>/cache``, per seed in ``<workdir>/seed<k>/`` with
several ``ablation.seeds``): the tiny base (pretrained here when ``model.path`` is empty), the
synthetic data files and every row are cached parts keyed by every setting that changes them
(the row's whole config but ``ablation``, the seed, the resolved CODI offset, the base and the
data files), so a re-run resumes and a changed setting never reuses an old base or row. Rows of
one workdir may run in separate processes (``ablation.rows=<one row>``); a last run over all rows
then only reads them. Writes ``metrics.json``, ``report.md`` (accuracy per row and test set,
forward passes per question, records dropped, the settings of every row) and ``loss.png``."""

from __future__ import annotations

import copy
import os
import time

import matplotlib
import ml_collections
import numpy as np
from flax import nnx

from jaxvlm import io, models, runcache, validate as check
from jaxvlm.data import arithmetic, gsm8k as gsm8k_data, sft, synthetic_gsm8k_aug
from jaxvlm.data.tokenizer import CharTokenizer
from jaxvlm.errors import ConfigError
from jaxvlm.eval.stats import mean_ci95
from jaxvlm.layers import lora
from jaxvlm.methods import kava
from jaxvlm.models.paths import check_model_path
from jaxvlm.run import experiment_entrypoint
from jaxvlm.sharding import get_rules, make_mesh
from jaxvlm.training import Trainer, TrainConfig, causal_lm_loss, remat_modules

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

_KV_RAW = {"kava.kv_normalize": False}
ROWS = {
    "cot": ("CoT", {"kava.method": "cot"}),
    "nocot": ("No-CoT", {"kava.method": "nocot"}),
    "codi": ("CODI", {"kava.method": "codi"}),
    "pccot": ("PCCoT", {"kava.method": "pccot"}),
    "pccot_codi": ("+ CODI", {"kava.method": "kava", "kava.terms": "student_ce,teacher_ce,codi"}),
    "pccot_codi_kv": ("+ KV (right-crop)", {"kava.method": "kava", "kava.select": "right_crop",
                                            **_KV_RAW}),
    "pccot_codi_rkv": ("+ R-KV", {"kava.method": "kava", "kava.select": "rkv", **_KV_RAW}),
    "kava": ("KAVA (full)", {"kava.method": "kava"}),
    "pccot_kv": ("PCCoT + KV (no CODI)", {"kava.method": "kava",
                                          "kava.terms": "student_ce,teacher_ce,kv"}),
    "kava_dense": ("KAVA (dense KV: every iteration)", {"kava.method": "kava",
                                                         "kava.kv_iterations": "all"}),
    "kava_seqnorm": ("KAVA (R-KV importance over the sequence)", {
        "kava.method": "kava", "kava.importance": "sequence"}),
    "kava_special": ("KAVA (+ special-token embeddings)", {
        "kava.method": "kava", "lora.train_special_embeddings": True}),
}
ROWS.update({f"full_{k}": (f"{ROWS[k][0]} (full FT)", {**ROWS[k][1], "lora.enabled": False})
             for k in ("cot", "nocot", "pccot", "kava")})
ABLATION = ("pccot", "pccot_codi", "pccot_codi_kv", "pccot_codi_rkv", "kava", "kava_dense",
            "kava_seqnorm", "pccot_kv", "kava_special")
SOURCES = ("arithmetic", "gsm8k_aug", "synthetic_aug")
NOT_ROW_SETTINGS = ("ablation", "mesh")  # which rows / seeds run, and where: never a row's result


def row_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  if name not in ROWS:
    raise ConfigError("ablation.rows", name, f"names from {sorted(ROWS)}")
  c = copy.deepcopy(config)
  for key, value in ROWS[name][1].items():
    section, field = key.split(".")
    c[section][field] = value
  return c


def kava_settings(c: ml_collections.ConfigDict, tok=None) -> kava.KavaConfig:
  """The row's ``KavaConfig``; ``kava.codi_offset="auto"`` is resolved from ``tok``
  (``resolve_codi_offset``; 0 when no tokenizer is given, for checks)."""
  k = c.kava.to_dict()
  if k["method"] == "codi":  # CODI decodes its latents sequentially (Jacobi with T = M)
    k["iterations"] = k.pop("codi_iterations") or k["num_latents"]
  if k["codi_offset"] == "auto":
    k["codi_offset"] = 0 if tok is None else kava.resolve_codi_offset(tok, c.data.answer_prefix)
  return kava.KavaConfig.from_mapping(k)


def row_names(config: ml_collections.ConfigDict) -> list[str]:
  """The rows of ``ablation.rows`` (none: the single ``kava.method``), each checked."""
  names = [n.strip() for n in str(config.ablation.rows).split(",") if n.strip()]
  for name in names:
    if name not in ROWS:
      raise ConfigError("ablation.rows", name, f"names from {sorted(ROWS)}")
  return names


def validate(config: ml_collections.ConfigDict) -> None:
  """Refuses a bad config before any work (no model, data or jax needed)."""
  check.choice(config, "data.source", SOURCES)
  check.choice(config, "data.over_budget", kava.data.OVER_BUDGET)
  check.choice(config, "kava.projection", kava.model.PROJECTIONS)
  check.choice(config, "lora.train_special_embeddings", (True, False))
  check.positive(config, "train.steps", "train.batch_size", "train.grad_accum",
                 "train.eval_batch_size", "data.max_new_tokens_cot", "data.max_new_tokens_answer")
  check.divisible(config, "train.batch_size", "train.grad_accum")
  check.in_range(config, "data.q_len", 0)
  check.in_range(config, "data.cot_len", 0)
  check.in_range(config, "data.ans_len", 0)
  if config.lora.enabled:
    check.positive(config, "lora.rank", "lora.alpha")
    check.in_range(config, "lora.dropout", 0, 1, high_open=True)
  if config.data.source != "gsm8k_aug":
    check.positive(config, "data.num_train", "data.num_test")
  if config.model.path:
    check_model_path(config.model.path)
  else:
    check.positive(config, *(f"model.hf_config.{k}" for k in (
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads")))
    check.positive(config, "pretrain.batch_size", "pretrain.lr")
    check.in_range(config, "pretrain.steps", 0)
  offset = config.kava.codi_offset
  if offset != "auto" and (isinstance(offset, bool) or not isinstance(offset, int) or offset < 0):
    raise ConfigError("kava.codi_offset", offset, "'auto' or an int >= 0")
  ablation_seeds(config)
  for name in row_names(config) or [None]:
    kava_settings(config if name is None else row_config(config, name))


def load_data(c: ml_collections.ConfigDict, cache: runcache.RunCache | None = None
              ) -> tuple[list[dict], dict[str, list[dict]], list[dict]]:
  """(train records, {test set name: records}, base-pretraining records), each record
  ``{"question", "cot", "answer"}``; the three arithmetic sets are disjoint. ``synthetic_aug``
  writes its GSM8K-AUG files into the ``cache`` part ``data`` and reads them back."""
  d = c.data
  if d.source == "synthetic_aug":
    settings = {"num_train": d.num_train, "num_test": d.num_test, "max_steps": d.max_steps,
                "seed": c.seed}
    folder = cache.entry("data", settings)
    paths = synthetic_gsm8k_aug.write_splits(folder, d.num_train, d.num_test, d.max_steps, c.seed)
    return (gsm8k_data.read_aug(paths["train"]),
            {"synthetic_aug": gsm8k_data.read_aug(paths["test"])}, [])
  if d.source == "arithmetic":
    n_pre = c.pretrain.num_problems
    train, test = arithmetic.make_multistep_splits(n_pre + d.num_train, d.num_test,
                                                   d.num_operands, d.max_operand, seed=c.seed,
                                                   ops=d.ops, modulus=d.modulus)
    train = [kava.as_cot_record(e) for e in train]
    return train[n_pre:], {"held-out": [kava.as_cot_record(e) for e in test]}, train[:n_pre]
  if d.source == "gsm8k_aug":
    tests = {}
    for name, path in d.test_paths.items():
      reader = gsm8k_data.READERS["gsm8k_aug" if name.startswith("gsm8k_aug") else name]
      tests[name] = reader(path, d.test_limit or None)
    return gsm8k_data.read_aug(d.train_path, d.train_limit or None), tests, []
  raise ConfigError("data.source", d.source, f"one of {SOURCES}")


def base_optimizer(c: ml_collections.ConfigDict) -> dict:
  """The optimizer that pretrains the tiny base: the rows' optimizer at ``pretrain.lr``."""
  return dict(c.optimizer.to_dict(), lr=c.pretrain.lr, warmup_steps=20)


# the data settings that shape the base's pretraining text: its problems are the first
# ``pretrain.num_problems`` drawn for the seed, whatever the sizes of the rows' splits
BASE_DATA = ("source", "num_operands", "max_operand", "ops", "modulus", "question_template",
             "answer_prefix")


def base_settings(c: ml_collections.ConfigDict) -> dict:
  """Every setting the tiny base depends on (not the rows' learning rate or split sizes)."""
  return {"model": c.model.to_dict(), "pretrain": c.pretrain.to_dict(),
          "data": {k: c.data[k] for k in BASE_DATA}, "optimizer": base_optimizer(c),
          "seed": c.seed}


def pretrain_base(c, tok, problems: list[dict], cache: runcache.RunCache, mesh, rules) -> str:
  """Tiny preset: the "pretrained LM" that the rows adapt: a random LLaMA fully trained on CoT
  text ``prompt + cot + prefix answer`` of problems disjoint from the rows' train and test sets
  (a base that can already reason step by step, like an instruct model on GSM8K); the cache
  part ``base`` keyed by ``base_settings``."""
  base = cache.entry("base", base_settings(c))
  if os.path.exists(os.path.join(base, "config.json")):
    return base
  hf = dict(c.model.hf_config.to_dict(), vocab_size=tok.vocab_size)
  model = models.from_config(hf, seed=c.seed, dtype=c.model.dtype,
                             param_dtype=c.model.param_dtype, mesh=mesh, rules=rules)
  d = c.data
  rows = [kava.prompt_ids(tok, e["question"], d.question_template)
          + tok.encode(f"{e['cot']} {d.answer_prefix} {e['answer']}") + [tok.eos_token_id]
          for e in problems]
  ids = np.full((len(rows), max(map(len, rows))), tok.pad_token_id, np.int32)
  mask = np.zeros_like(ids)
  for i, r in enumerate(rows):
    ids[i, :len(r)], mask[i, :len(r)] = r, 1
  p = c.pretrain
  trainer = Trainer(model, base_optimizer(c), causal_lm_loss,
                    sft.batch_factory({"input_ids": ids, "attention_mask": mask}, p.batch_size),
                    mesh, config=TrainConfig(steps=p.steps, seed=c.seed, log_every=50),
                    rules=rules)
  trainer.train()
  models.save_pretrained(trainer.model, base)
  return base


def build_model(c, tok, base: str, mesh, rules):
  """(KavaModel, trainable filter) from the base folder, LoRA or full fine-tuning."""
  lm = models.load_pretrained(base, dtype=c.model.dtype, param_dtype=c.model.param_dtype,
                              mesh=mesh, rules=rules)
  trainable = nnx.Param
  ids = [kava.special_token_id(tok, c.tokens[k], f"tokens.{k}") for k in ("bot", "eot", "latent")]
  if c.lora.enabled:
    lora.apply_lora(lm, tuple(c.lora.targets), c.lora.rank, c.lora.alpha, c.lora.dropout,
                    seed=c.seed)
    if c.lora.train_special_embeddings:
      lora.train_rows(lm, ids)
    trainable = nnx.Any(nnx.LoRAParam, kava.LatentParam)
  if c.model.remat:
    remat_modules(lm, r"layers\.\d+$")
  return kava.KavaModel(lm, c.kava.projection, *ids, seed=c.seed), trainable


def row_settings(c: ml_collections.ConfigDict, settings: kava.KavaConfig, base: str) -> dict:
  """Every setting a row's result depends on: its config but ``NOT_ROW_SETTINGS``, the resolved
  method settings (the CODI offset) and the base model folder."""
  out = {k: v for k, v in c.to_dict().items() if k not in NOT_ROW_SETTINGS}
  return dict(out, resolved=runcache.canonical(settings), base=os.path.abspath(base))


def run_row(c, name: str, tok, base: str, data: dict, cache: runcache.RunCache, mesh,
            rules) -> dict:
  """Trains and evaluates one row (the cache part ``row-<name>``: its checkpoints and result)."""
  settings = kava_settings(c, tok)
  key = row_settings(c, settings, base)
  files = [base] + data["files"]
  done = cache.load(f"row-{name}", key, files)
  if done is not None:
    return done
  model, trainable = build_model(c, tok, base, mesh, rules)
  t = c.train
  trainer = Trainer(
      model, c.optimizer, kava.make_loss_fn(settings, data["prefix_len"]),
      sft.batch_factory(data["train"], t.batch_size), mesh,
      config=TrainConfig(steps=t.steps, seed=c.seed, grad_accum=t.grad_accum,
                         log_every=t.log_every, checkpoint_every=t.checkpoint_every,
                         keep_checkpoints=t.keep_checkpoints, progress=True),
      rules=rules, trainable=trainable, workdir=cache.entry(f"row-{name}", key, files),
      tokens_fn=lambda b: int(sum(np.sum(b[k]) for k in ("q_mask", "cot_mask", "ans_mask"))))
  start = time.perf_counter()
  history = trainer.train(resume=t.resume)
  seconds = time.perf_counter() - start
  model = trainer.model
  d = c.data
  max_new = d.max_new_tokens_cot if settings.method == "cot" else d.max_new_tokens_answer
  evals = {}
  for test_name, records in data["tests"].items():
    r = kava.evaluate(model, tok, records, method=settings.method,
                      num_latents=settings.num_latents, iterations=settings.iterations,
                      question_template=d.question_template, answer_prefix=d.answer_prefix,
                      max_new_tokens=max_new, batch_size=t.eval_batch_size)
    evals[test_name] = {"accuracy": r["accuracy"], "forward_passes": r["forward_passes"],
                        "samples": [[e["question"], p, e["answer"]]
                                    for e, p in zip(records[:3], r["predictions"])]}
  result = {"name": name, "label": ROWS.get(name, (name,))[0], "method": settings.method,
            "lora": bool(c.lora.enabled), "terms": list(settings.active_terms),
            "iterations": settings.iterations, "codi_offset": settings.codi_offset,
            "train_seconds": seconds, "eval": evals,
            "history": [{k: h[k] for k in h if not k.startswith("tokens")} for h in history],
            "settings": runcache.flatten(key)}
  cache.save(f"row-{name}", key, result, files)
  return result


def plot_losses(results: dict, path: str) -> None:
  """Train loss (weighted sum, log scale) and answer-token accuracy per row; a LoRA row and its
  full fine-tuning twin share a colour, the full-FT line dashed."""
  fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(13, 4))
  colors = {}
  for name, r in results.items():
    color = colors.setdefault(name.removeprefix("full_"), plt.cm.tab10(len(colors) % 10))
    style = dict(color=color, linestyle="-" if r["lora"] else "--", label=r["label"])
    steps = [x["step"] for x in r["history"]]
    loss_ax.plot(steps, [x["loss"] for x in r["history"]], **style)
    acc_ax.plot(steps, [x.get("answer_accuracy", float("nan")) for x in r["history"]], **style)
  loss_ax.set(xlabel="step", ylabel="train loss (weighted sum)", yscale="log")
  acc_ax.set(xlabel="step", ylabel="answer-token accuracy (train batch)")
  fig.legend(*loss_ax.get_legend_handles_labels(), loc="center right", fontsize=7)
  fig.suptitle("KAVA rows (dashed: full fine-tuning)")
  fig.tight_layout(rect=(0, 0, 0.84, 1))
  fig.savefig(path, dpi=110)
  plt.close(fig)


def seeds_table(results: dict, test: str, seeds: list[int]) -> str:
  """Per-seed accuracy of every row on ``test`` with the mean and sample std (several seeds)."""
  head = " | ".join(f"seed {s}" for s in seeds)
  lines = [f"| row | {head} | mean | std |", "|---" * (len(seeds) + 3) + "|"]
  for r in results.values():
    e = r["eval"][test]
    cells = " | ".join(f"{100 * e['accuracy_per_seed'][str(s)]:.1f}" for s in seeds)
    lines.append(f"| {r['label']} | {cells} | {100 * e['accuracy']:.1f} | "
                 f"{100 * e['accuracy_std']:.1f} |")
  return "\n".join(lines)


def gaps_table(results: dict, test: str, seeds: list[int], reference: str = "nocot") -> str:
  """Every row's accuracy minus ``reference``'s, per seed (the rows of a seed share its base and
  data, so the gap is paired), with the mean and its 95% t-interval over seeds; a gap counts as
  shown only where the interval excludes 0."""
  if reference not in results:
    return f"(no `{reference}` row: no gaps)"
  ref = results[reference]["eval"][test]["accuracy_per_seed"]
  head = " | ".join(f"seed {s}" for s in seeds)
  lines = [f"| row - {results[reference]['label']} | {head} | mean | 95% interval | shown |",
           "|---" * (len(seeds) + 4) + "|"]
  pts = lambda x: f"{round(x, 1) + 0.0:+.1f}"  # + 0.0: no "-0.0"
  for name, r in results.items():
    if name == reference:
      continue
    acc = r["eval"][test]["accuracy_per_seed"]
    gaps = [100 * (acc[str(s)] - ref[str(s)]) for s in seeds]
    g = mean_ci95(gaps)
    low, high = g["ci95"]
    lines.append(f"| {r['label']} | " + " | ".join(map(pts, gaps)) +
                 f" | {pts(g['mean'])} | [{pts(low)}, {pts(high)}] | "
                 f"{'yes' if low > 0 or high < 0 else 'no'} |")
  return "\n".join(lines)


def report(config, results: dict, tests: dict, notes: dict, base_note: str,
           seeds: list[int]) -> str:
  """The Markdown report (``notes``: segment budgets and records over them, of the first seed)."""
  names = list(tests)
  acc = lambda r: " | ".join(f"{100 * r['eval'][n]['accuracy']:.1f}" for n in names)
  head = " | ".join(f"acc % ({n})" for n in names)
  main = "\n".join(
      f"| {r['label']} | {'LoRA' if r['lora'] else 'full'} | {', '.join(r['terms'])} | "
      f"{r['iterations'] if r['method'] not in ('cot', 'nocot') else '-'} | {acc(r)} | "
      f"{r['eval'][names[0]]['forward_passes']:.1f} | {r['train_seconds']:.0f} |"
      for r in results.values())
  abl = "\n".join(f"| {results[k]['label']} | {acc(results[k])} |" for k in ABLATION
                  if k in results)
  pairs = [(k, f"full_{k}") for k in ("cot", "nocot", "pccot", "kava")
           if k in results and f"full_{k}" in results]
  first = names[0]
  lvf = "\n".join(
      f"| {results[a]['label']} | {100 * results[a]['eval'][first]['accuracy']:.1f} | "
      f"{100 * results[b]['eval'][first]['accuracy']:.1f} | "
      f"{100 * (results[b]['eval'][first]['accuracy'] - results[a]['eval'][first]['accuracy']):+.1f} |"
      for a, b in pairs)
  samples = "\n".join(f"| {r['label']} | `{s[0]}` | `{s[1]}` | `{s[2]}` |"
                      for r in results.values() for s in r["eval"][first]["samples"][:1])
  configs = "\n\n".join(f"<details><summary>{r['label']}</summary>\n\n"
                        f"{runcache.describe(r['settings'])}\n</details>"
                        for r in results.values())
  lost = notes.get("over_budget", {})
  dropped = ", ".join(f"{n} over {f}" for f, n in lost.items() if f != "truncated" and n)
  budget_note = (f"training records: {notes.get('train_kept')} of {notes.get('train_records')} "
                 f"kept (data.over_budget = {config.data.over_budget}; dropped: "
                 f"{dropped or 'none'}; CoT truncated: {lost.get('truncated', 0)}); test sets are "
                 "evaluated whole (generation has no segment budget)")
  offsets = sorted({r.get("codi_offset") for r in results.values()
                    if "codi" in r["terms"]} - {None})
  d, k = config.data, config.kava
  spread = "" if len(seeds) == 1 else f"""
## Seeds ({first})

Each seed draws its own data split, pretrains its own base and trains every row (runs in
`seed<k>/`); the tables above show the mean over seeds {', '.join(map(str, seeds))}, the loss
curves seed {seeds[0]}.

{seeds_table(results, first, seeds)}

Gaps to No-CoT: a seed's rows share its base and data split, which can move every row of the
seed together, so rows are compared by their paired gap per seed.

{gaps_table(results, first, seeds)}
"""
  return f"""# KAVA ablation report

Data: {d.source} ({', '.join(f'{n}: {len(v)} problems' for n, v in tests.items())});
model: {config.model.path or 'tiny LLaMA ' + base_note}; M = {k.num_latents} latents,
T = {k.iterations} Jacobi iterations (CODI: T = M, i.e. sequential latents); segment budgets
{notes.get('lengths')}; {budget_note}; CODI offset {k.codi_offset} (resolved: {offsets or '-'});
{config.train.steps} steps of batch {config.train.batch_size} per row; seed(s)
{', '.join(map(str, seeds))}.

## All rows

| row | params | loss terms | T | {head} | forward passes / question | train s |
|---|---|---|---|---|---|---|
{main}

Forward passes per question count every sequential model call of greedy decoding, `<eos>`
included: CoT one per generated token; latent methods 1 (question) + T (Jacobi) + answer tokens.

## Table 1: ablation (LoRA)

| configuration | {head} |
|---|---|
{abl}

Rows: PCCoT = CE(A|Z,Q) + CE(A,C|Q); + CODI adds alpha1 x CODI; + KV adds alpha2 x KV with the
last M CoT entries (right-crop) and raw distances; + R-KV selects them by R-KV instead; KAVA
full adds the layer-wise std normalisation of the KV distances. PCCoT + KV (not in the seed's
table) is KAVA full without the CODI term: the KV distillation's own effect on PCCoT. KAVA
(dense KV) supervises the latents' KV after every Jacobi iteration, not only the last (mean over
iterations).

## Table 2: LoRA vs full fine-tuning ({first})

| method | LoRA acc % | full FT acc % | change |
|---|---|---|---|
{lvf}
{spread}
![loss curves](loss.png)

## Samples

| row | question | prediction | reference |
|---|---|---|---|
{samples}

## Settings of every row

{configs}
"""


def run_seed(config: ml_collections.ConfigDict, workdir: str, mesh, rules
             ) -> tuple[dict, dict, dict, str]:
  """Every row of ``ablation.rows`` for ``config.seed`` (its data split, base and rows cached in
  ``workdir/cache``): (results by row, test sets, data notes (segment budgets, records dropped),
  a note on the base model)."""
  cache = runcache.RunCache(os.path.join(workdir, "cache"))
  train, tests, pretrain_problems = load_data(config, cache)
  d = config.data
  if config.model.path:
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(config.model.path)
    tok.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    base, base_note = config.model.path, ""
  else:
    tok = CharTokenizer()
    t0 = time.perf_counter()
    base = pretrain_base(config, tok, pretrain_problems, cache, mesh, rules)
    base_note = (f"(pretrained on the CoT text of {len(pretrain_problems)} other problems, "
                 f"{config.pretrain.steps} steps)")
    print(f"[kava] base model ready in {time.perf_counter() - t0:.0f} s", flush=True)
  fmt = dict(question_template=d.question_template, answer_prefix=d.answer_prefix)
  need = kava.lengths_needed(tok, train, **fmt)
  lengths = {k: d[k] or need[k] for k in ("q_len", "cot_len", "ans_len")}
  kept, lost = kava.fit_budget(tok, train, **lengths, **fmt, over_budget=d.over_budget)
  if not kept:
    raise ConfigError("data.over_budget", d.over_budget, f"a budget that keeps some of the "
                      f"{len(train)} training records ({lost})")
  files = [p for p in (d.train_path, *d.test_paths.values()) if p and d.source == "gsm8k_aug"]
  data = {"train": kava.encode(tok, kept, **lengths, **fmt,
                               truncate_cot=d.over_budget == "truncate_cot"),
          "tests": tests, "files": files, "prefix_len": len(kava.encode_text(tok, d.answer_prefix))}
  notes = {"lengths": lengths, "train_records": len(train), "train_kept": len(kept),
           "over_budget": lost}
  results = {}
  for name in row_names(config) or [None]:
    c = config if name is None else row_config(config, name)
    name = name or config.kava.method
    print(f"[kava] seed {config.seed} row {name}", flush=True)
    results[name] = run_row(c, name, tok, base, data, cache, mesh, rules)
  return results, tests, notes, base_note


def ablation_seeds(config: ml_collections.ConfigDict) -> list[int]:
  """``ablation.seeds`` ("0,1,2"; "" = the single ``seed``) as ints."""
  seeds = str(config.ablation.seeds)
  try:
    out = [int(x) for x in seeds.split(",") if x.strip()]
  except ValueError:
    raise ConfigError("ablation.seeds", seeds, "comma-separated ints, e.g. '0,1,2'") from None
  if not out:
    return [int(config.seed)]
  if len(set(out)) != len(out) or min(out) < 0:
    raise ConfigError("ablation.seeds", seeds, "distinct seeds >= 0")
  return out


def merge_seeds(per_seed: dict[int, dict]) -> dict:
  """Rows of several seeds -> one result per row: the first seed's record with each test's
  ``accuracy`` and ``forward_passes`` replaced by their means over seeds, the per-seed accuracies
  under ``accuracy_per_seed`` and their sample std under ``accuracy_std`` (one seed: unchanged)."""
  seeds = list(per_seed)
  if len(seeds) == 1:
    return per_seed[seeds[0]]
  merged = {}
  for name, first in per_seed[seeds[0]].items():
    evals = {}
    for test, e in first["eval"].items():
      acc = [per_seed[s][name]["eval"][test]["accuracy"] for s in seeds]
      fwd = [per_seed[s][name]["eval"][test]["forward_passes"] for s in seeds]
      evals[test] = dict(e, accuracy=float(np.mean(acc)), accuracy_std=float(np.std(acc, ddof=1)),
                         accuracy_per_seed=dict(zip(map(str, seeds), acc)),
                         forward_passes=float(np.mean(fwd)))
    merged[name] = dict(first, eval=evals, train_seconds=float(np.mean(
        [per_seed[s][name]["train_seconds"] for s in seeds])))
  return merged


def main(config: ml_collections.ConfigDict, workdir: str) -> dict:
  mesh, rules = make_mesh(config.mesh), get_rules(config.mesh.rules)
  seeds = ablation_seeds(config)
  runs = {}
  for seed in seeds:
    c = copy.deepcopy(config)
    c.seed = seed
    runs[seed] = run_seed(c, workdir if len(seeds) == 1 else os.path.join(workdir, f"seed{seed}"),
                          mesh, rules)
  per_seed = {seed: run[0] for seed, run in runs.items()}
  _, tests, notes, base_note = runs[seeds[0]]  # the report states the first seed's
  results = merge_seeds(per_seed)
  plot_losses(per_seed[seeds[0]], os.path.join(workdir, "loss.png"))
  io.write_text(os.path.join(workdir, "report.md"),
                report(config, results, tests, notes, base_note, seeds))
  summary = {name: {t: {k: v for k, v in r["eval"][t].items() if k != "samples"} for t in tests}
             for name, r in results.items()}
  io.write_json(os.path.join(workdir, "metrics.json"),
                {"rows": summary, "lengths": notes["lengths"], "data": notes, "seeds": seeds,
                 "details": results})
  return summary


if __name__ == "__main__":
  experiment_entrypoint(main, "configs/kava.py:tiny")
