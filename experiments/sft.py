"""Supervised fine-tuning (full or LoRA) with exact-match accuracy before and after training.

Writes ``metrics.json``, ``report.md``, ``loss.png``, ``metrics.jsonl`` + TensorBoard events and
Orbax checkpoints into the workdir (and, with ``train.export``, the merged HF model / adapter).
``validate`` refuses bad settings before any work. Text path: the accuracy before training is
cached under every setting it depends on (``<workdir>/cache``); checkpoints left in the run folder
by other settings stop the run with one line naming the changed keys; the report lists the
settings.
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import matplotlib
import ml_collections
from flax import nnx

from jaxvlm import io, models, runcache
from jaxvlm import validate as checks
from jaxvlm.data import arithmetic, gsm8k as gsm8k_data, sft
from jaxvlm.data.tokenizer import CharTokenizer
from jaxvlm.errors import ConfigError, DataFileError, MissingFileError
from jaxvlm.eval import gsm8k as gsm8k_eval, vqa_answers
from jaxvlm.layers import lora
from jaxvlm.models.paths import check_model_path, resolve_model_path
from jaxvlm.models.tokenizer import load_tokenizer
from jaxvlm.run import experiment_entrypoint
from jaxvlm.sharding import get_rules, make_mesh
from jaxvlm.training import Trainer, TrainConfig, causal_lm_loss, remat_modules, vlm
from jaxvlm.training.checkpoint import refuse_other_settings

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


SOURCES = ("arithmetic", "gsm8k", "synthetic_vqa")
# Keys that change neither the trained weights nor the evaluation: a run may resume under others.
RESUMABLE = ("train.resume", "train.log_every", "train.eval_every", "train.checkpoint_every",
             "train.keep_checkpoints", "train.export")


def validate(config: ml_collections.ConfigDict) -> None:
  """Refuses, before any work, every value the run cannot use (one error naming the key)."""
  checks.choice(config, "data.source", SOURCES)
  checks.positive(config, "train.steps", "train.batch_size", "train.grad_accum",
                  "train.eval_batch_size", "train.log_every", "train.keep_checkpoints",
                  "optimizer.lr")
  checks.divisible(config, "train.batch_size", "train.grad_accum")
  for key in ("train.eval_every", "train.checkpoint_every", "optimizer.warmup_steps",
              "optimizer.weight_decay", "optimizer.grad_clip"):
    checks.in_range(config, key, 0)
  if config.data.source != "gsm8k":  # gsm8k: the test file (and data.test_limit) sets the size
    checks.positive(config, "data.num_test")
  if config.data.source == "synthetic_vqa":
    return
  checks.positive(config, "data.seq_len", "data.max_new_tokens")
  checks.in_range(config, "data.test_limit", 0)
  if config.lora.enabled:
    checks.positive(config, "lora.rank", "lora.alpha")
    checks.in_range(config, "lora.dropout", 0, 1, high_open=True)
  if config.data.source == "arithmetic":
    checks.positive(config, "data.num_train", "data.digits")
    pairs = (10 ** config.data.digits - 10 ** (config.data.digits - 1)) ** 2
    if config.data.num_train + config.data.num_test > pairs:
      raise ConfigError("data.num_train", config.data.num_train,
                        f"at most {pairs} - data.num_test ({config.data.num_test}): there are "
                        f"{pairs} distinct {config.data.digits}-digit pairs")
  else:
    for key in ("data.train_path", "data.test_path"):
      path = checks.get(config, key)
      if not path or not os.path.isfile(path):
        raise MissingFileError(path, f"{key} (a GSM8K jsonl file)")
    if not config.model.path:
      raise ConfigError("model.path", "", "a HF model folder or hub id with data.source='gsm8k' "
                                          "(the random tiny model's character tokenizer covers "
                                          "only the arithmetic task)")
  if config.model.path:
    check_model_path(config.model.path, "model.path")


def load_data(cfg: ml_collections.ConfigDict) -> tuple[list[dict], list[dict]]:
  """(train, test) items of the text sources; an empty split is an error naming its source."""
  if cfg.source == "arithmetic":
    return arithmetic.make_splits(cfg.digits, cfg.num_train, cfg.num_test)
  if cfg.source != "gsm8k":
    raise ConfigError("data.source", cfg.source, f"one of {list(SOURCES)}")
  splits = (gsm8k_data.read_jsonl(cfg.train_path),
            gsm8k_data.read_jsonl(cfg.test_path, cfg.test_limit or None))
  for path, items, name in zip((cfg.train_path, cfg.test_path), splits, ("train", "test")):
    if not items:
      raise DataFileError(path, f"holds no records; the {name} set would be empty")
  return splits


def build_model(config: ml_collections.ConfigDict, mesh, rules):
  """(model, tokenizer): a HF folder (or hub id, see jaxvlm.models.paths) with its tokenizer, or
  a random tiny model with the character tokenizer."""
  m = config.model
  if m.path:
    path = resolve_model_path(m.path, "model.path")
    tok = load_tokenizer(path)
    model = models.load_pretrained(path, dtype=m.dtype, param_dtype=m.param_dtype, mesh=mesh,
                                   rules=rules)
  else:
    tok = CharTokenizer()
    hf = dict(m.hf_config.to_dict(), vocab_size=tok.vocab_size)
    model = models.from_config(hf, seed=config.seed, dtype=m.dtype, param_dtype=m.param_dtype,
                               mesh=mesh, rules=rules)
  return model, tok


def cached_accuracy(cache: runcache.RunCache, config: ml_collections.ConfigDict,
                    compute) -> dict:
  """The accuracy of the model before training: stored under every setting it depends on (model,
  seed, LoRA, data, evaluation batch, mesh and the input files), computed on a miss."""
  settings = {"model": config.model, "seed": config.seed, "lora": config.lora,
              "data": config.data, "eval_batch_size": config.train.eval_batch_size,
              "mesh": config.mesh}
  files = [p for p in (config.model.path, config.data.test_path) if p and os.path.exists(p)]
  result = cache.load("accuracy_before", settings, files)
  if result is None:
    result = compute()
    cache.save("accuracy_before", settings, result, files)
  return result


def plot_loss(history: list[dict], path: str) -> None:
  fig, ax = plt.subplots(figsize=(5, 3))
  ax.plot([h["step"] for h in history], [h["loss"] for h in history])
  ax.set(xlabel="step", ylabel="train loss", yscale="log", title="SFT loss")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main_vlm(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """``data.source == "synthetic_vqa"``: a VLM folder (``model.path``, or the tiny real-format
  folder of ``model.family``) trained on the synthetic VQA set and saved as ``workdir/model``."""
  test_set = vlm.synthetic_split(config.data, config.data.num_test, config.data.test_seed)
  evaluate = lambda m, proc, samples: vqa_answers.evaluate_vqa(
      m, proc, samples, batch_size=config.train.eval_batch_size,
      max_new_tokens=config.data.max_new_tokens)
  before = evaluate(*vlm.load_model(config, vlm.source_folder(config, workdir)), test_set)
  start = time.perf_counter()
  trained = vlm.train_vlm(config, workdir)
  train_seconds = time.perf_counter() - start
  after = evaluate(trained.model, trained.processor, test_set)
  blind = evaluate(trained.model, trained.processor, vqa_answers.blank_images(test_set))
  history = trained.history
  plot_loss(history, os.path.join(workdir, "loss.png"))
  summary = {"family": config.model.family, "model_folder": trained.folder,
             "accuracy_before": before["accuracy"], "accuracy_after": after["accuracy"],
             "accuracy_blank_images": blind["accuracy"],
             "strict_match_after": after["strict_match"], "per_type_after": after["per_type"],
             "per_type_blank_images": blind["per_type"],
             "loss_first": history[0]["loss"], "loss_last": history[-1]["loss"],
             "steps": history[-1]["step"], "train_seconds": train_seconds,
             "num_test": len(test_set)}
  io.write_json(os.path.join(workdir, "metrics.json"), {**summary, "history": history})
  rows = "\n".join(f"| {k} | {before['per_type'].get(k, 0):.3f} | {v:.3f} | "
                   f"{blind['per_type'].get(k, 0):.3f} |" for k, v in after["per_type"].items())
  source = config.model.path or f"tiny `{config.model.family}` folder (random init)"
  io.write_text(os.path.join(workdir, "report.md"), f"""# SFT report (VLM, synthetic VQA)

Model: {source}, through its processor and chat template; saved trained as
`{trained.folder}`. {config.data.num_train} train / {len(test_set)} held-out questions;
{summary['steps']} steps of {config.train.batch_size} in {train_seconds:.1f} s.

| VQA accuracy (held-out) | before | after | after, blank images |
|---|---|---|---|
| all | {before['accuracy']:.3f} | {after['accuracy']:.3f} | {blind['accuracy']:.3f} |
{rows}

Train loss first / last logged: {history[0]['loss']:.4f} / {history[-1]['loss']:.4f}.

![loss](loss.png)
""")
  return summary


def main(config: ml_collections.ConfigDict, workdir: str) -> dict:
  if config.data.source == "synthetic_vqa":
    return main_vlm(config, workdir)
  refuse_other_settings(os.path.join(workdir, "checkpoints"), config.to_dict(), RESUMABLE)
  mesh, rules = make_mesh(config.mesh), get_rules(config.mesh.rules)
  train_set, test_set = load_data(config.data)
  model, tok = build_model(config, mesh, rules)
  trainable = nnx.Param
  if config.lora.enabled:
    lora.apply_lora(model, tuple(config.lora.targets), config.lora.rank, config.lora.alpha,
                    config.lora.dropout, seed=config.seed)
    trainable = nnx.LoRAParam
  if config.model.remat:
    remat_modules(model, r"layers\.\d+$")

  def accuracy(m) -> dict:
    return gsm8k_eval.evaluate(m, tok, test_set, config.data.max_new_tokens,
                               config.train.eval_batch_size)

  model.eval()
  before = cached_accuracy(runcache.RunCache(os.path.join(workdir, "cache")), config,
                           lambda: accuracy(model))
  t = config.train
  trainer = Trainer(
      model, config.optimizer, causal_lm_loss,
      sft.batch_factory(sft.encode_all(tok, train_set, config.data.seq_len), t.batch_size), mesh,
      config=TrainConfig(steps=t.steps, seed=config.seed, grad_accum=t.grad_accum,
                         log_every=t.log_every, eval_every=t.eval_every,
                         checkpoint_every=t.checkpoint_every, keep_checkpoints=t.keep_checkpoints),
      rules=rules, trainable=trainable, workdir=workdir,
      eval_fn=lambda m, step: {"accuracy": accuracy(m)["accuracy"]},
      arch_config={k: v for k, v in dataclasses.asdict(model.config).items()
                   if k not in ("dtype", "param_dtype", "attention_impl")},
      run_config=config.to_dict())
  start = time.perf_counter()
  history = trainer.train(resume=t.resume)
  train_seconds = time.perf_counter() - start
  model = trainer.model
  after = accuracy(model)
  if t.export:
    if config.lora.enabled:
      lora.save_adapter(model, os.path.join(workdir, "adapter"), config.model.path)
      lora.merge_lora(model)
    models.save_pretrained(model, os.path.join(workdir, "export"))

  plot_loss(history, os.path.join(workdir, "loss.png"))
  summary = {
      "accuracy_before": before["accuracy"], "accuracy_after": after["accuracy"],
      "loss_first": history[0]["loss"], "loss_last": history[-1]["loss"],
      "steps": trainer.step, "train_seconds": train_seconds,
      "tokens_per_s": history[-1]["tokens_per_s"], "num_test": len(test_set),
      "lora": bool(config.lora.enabled),
      "trainable_params": int(sum(x.size for x in jax.tree.leaves(trainer.params))),
  }
  io.write_json(os.path.join(workdir, "metrics.json"), {**summary, "history": history})
  method = f"LoRA r{config.lora.rank}" if config.lora.enabled else "full fine-tune"
  samples = "\n".join(f"| `{e['question']}` | `{p}` | `{e['answer']}` |"
                      for e, p in list(zip(test_set, after["predictions"]))[:5])
  io.write_text(os.path.join(workdir, "report.md"), f"""# SFT report

Task: {config.data.source} ({len(train_set)} train / {len(test_set)} held-out items);
model: {config.model.path or 'random tiny LLaMA'}; {method};
{trainer.step} steps of {t.batch_size} in {train_seconds:.1f} s.

| metric | before | after |
|---|---|---|
| exact-match accuracy (held-out) | {before['accuracy']:.3f} | {after['accuracy']:.3f} |
| train loss (first / last logged) | {history[0]['loss']:.4f} | {history[-1]['loss']:.4f} |

![loss](loss.png)

| question | prediction | reference |
|---|---|---|
{samples}

## Settings

{runcache.describe(config)}
""")
  return summary


if __name__ == "__main__":
  experiment_entrypoint(main, "configs/sft.py:tiny")
