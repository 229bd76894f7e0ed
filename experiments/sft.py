"""Supervised fine-tuning (full or LoRA) with exact-match accuracy before and after training.

Writes ``metrics.json``, ``report.md``, ``loss.png``, ``metrics.jsonl`` + TensorBoard events and
Orbax checkpoints into the workdir (and, with ``train.export``, the merged HF model / adapter).
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import matplotlib
import ml_collections
from flax import nnx

from jaxvlm import io, models
from jaxvlm.data import arithmetic, gsm8k as gsm8k_data, sft, vlm_batches
from jaxvlm.data.tokenizer import CharTokenizer
from jaxvlm.errors import ConfigError
from jaxvlm.eval import gsm8k as gsm8k_eval
from jaxvlm.layers import lora
from jaxvlm.run import experiment_entrypoint
from jaxvlm.sharding import get_rules, make_mesh
from jaxvlm.training import Trainer, TrainConfig, causal_lm_loss, remat_modules, vlm

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load_data(cfg: ml_collections.ConfigDict) -> tuple[list[dict], list[dict]]:
  if cfg.source == "arithmetic":
    return arithmetic.make_splits(cfg.digits, cfg.num_train, cfg.num_test)
  if cfg.source == "gsm8k":
    return (gsm8k_data.read_jsonl(cfg.train_path),
            gsm8k_data.read_jsonl(cfg.test_path, cfg.test_limit or None))
  raise ConfigError("data.source", cfg.source, "'arithmetic', 'gsm8k' or 'synthetic_vqa'")


def build_model(config: ml_collections.ConfigDict, mesh, rules):
  """(model, tokenizer): a local HF folder with its tokenizer, or a random tiny model + chars."""
  m = config.model
  if m.path:
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(m.path)
    tok.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model = models.load_pretrained(m.path, dtype=m.dtype, param_dtype=m.param_dtype, mesh=mesh,
                                   rules=rules)
  else:
    tok = CharTokenizer()
    hf = dict(m.hf_config.to_dict(), vocab_size=tok.vocab_size)
    model = models.from_config(hf, seed=config.seed, dtype=m.dtype, param_dtype=m.param_dtype,
                               mesh=mesh, rules=rules)
  return model, tok


def plot_loss(history: list[dict], path: str) -> None:
  fig, ax = plt.subplots(figsize=(5, 3))
  ax.plot([h["step"] for h in history], [h["loss"] for h in history])
  ax.set(xlabel="step", ylabel="train loss", yscale="log", title="SFT loss")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main_vlm(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """``data.source == "synthetic_vqa"``: a tiny VLM (jaxvlm.training.vlm) on the synthetic VQA."""
  test_set = vlm.synthetic_split(config.data, config.data.num_test, config.data.test_seed)
  evaluate = lambda m, samples: vlm.evaluate_vqa(
      m, vlm_batches.vlm_tokenizer(), samples, batch_size=config.train.eval_batch_size,
      max_new_tokens=config.data.max_new_tokens)
  before = evaluate(vlm.build_tiny_vlm(config), test_set)
  start = time.perf_counter()
  model, _, history = vlm.train_tiny_vlm(config, workdir)
  train_seconds = time.perf_counter() - start
  after, blind = evaluate(model, test_set), evaluate(model, vlm.blank_images(test_set))
  plot_loss(history, os.path.join(workdir, "loss.png"))
  summary = {"family": config.model.family, "accuracy_before": before["accuracy"],
             "accuracy_after": after["accuracy"], "accuracy_blank_images": blind["accuracy"],
             "exact_match_after": after["exact_match"], "per_type_after": after["per_type"],
             "per_type_blank_images": blind["per_type"],
             "loss_first": history[0]["loss"], "loss_last": history[-1]["loss"],
             "steps": history[-1]["step"], "train_seconds": train_seconds,
             "num_test": len(test_set)}
  io.write_json(os.path.join(workdir, "metrics.json"), {**summary, "history": history})
  rows = "\n".join(f"| {k} | {before['per_type'].get(k, 0):.3f} | {v:.3f} | "
                   f"{blind['per_type'].get(k, 0):.3f} |" for k, v in after["per_type"].items())
  io.write_text(os.path.join(workdir, "report.md"), f"""# SFT report (tiny VLM, synthetic VQA)

Model: tiny `{config.model.family}` (random init); {config.data.num_train} train / {len(test_set)}
held-out questions; {summary['steps']} steps of {config.train.batch_size} in {train_seconds:.1f} s.

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
  before = accuracy(model)
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
""")
  return summary


if __name__ == "__main__":
  experiment_entrypoint(main, "configs/sft.py:tiny")
