"""``jaxvlm parity PATH``: compares our model with ``transformers`` on a local HF checkpoint.

Runs both on the same random prompt (default 512 tokens, MaxText-style) in float32 and reports,
per layer, the max relative error of the hidden states, plus the per-token KL divergence of the
next-token distributions and top-1 agreement. Exit code 1 when the tolerance is exceeded.
"""

from __future__ import annotations

import argparse

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("path", help="local HF checkpoint folder (config.json + safetensors)")
  parser.add_argument("--length", type=int, default=512, help="prompt length in tokens")
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--rtol", type=float, default=1e-4, help="max relative error allowed")
  parser.add_argument("--json", default=None, help="also write the report here")


def compare(path: str, length: int = 512, batch: int = 1, seed: int = 0) -> dict:
  """Per-layer relative errors, KL(ref || ours) per token, and top-1 agreement."""
  import jax
  import torch
  import transformers

  from jaxvlm.models import load_pretrained

  model = load_pretrained(path, dtype="float32")  # first: its errors name the bad file
  ref_model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
  vocab = model.config.vocab_size
  ids = np.random.default_rng(seed).integers(0, vocab, (batch, length))
  with torch.no_grad():
    ref = ref_model(torch.tensor(ids), output_hidden_states=True)
  with jax.default_matmul_precision("highest"):
    ours = model(ids, output_hidden_states=True)
  layers = []
  for a, b in zip(ours.hidden_states, ref.hidden_states):
    a, b = np.asarray(a, np.float64), b.double().numpy()
    layers.append(float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12)))
  lo, lr = np.asarray(ours.logits, np.float64), ref.logits.double().numpy()
  log_p = lr - np.logaddexp.reduce(lr, axis=-1, keepdims=True)
  log_q = lo - np.logaddexp.reduce(lo, axis=-1, keepdims=True)
  kl = np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)
  return {"path": path, "tokens": int(batch * length), "hidden_state_rel_err": layers,
          "logits_rel_err": float(np.max(np.abs(lo - lr)) / np.max(np.abs(lr))),
          "kl_mean": float(kl.mean()), "kl_max": float(kl.max()),
          "top1_agreement": float(np.mean(lo.argmax(-1) == lr.argmax(-1)))}


def main(args: argparse.Namespace) -> int:
  report = compare(args.path, args.length, args.batch, args.seed)
  worst = max(report["hidden_state_rel_err"] + [report["logits_rel_err"]])
  print(f"{'layer':>6} {'rel err':>10}")
  for i, e in enumerate(report["hidden_state_rel_err"]):
    print(f"{i:>6} {e:>10.2e}")
  print(f"logits rel err {report['logits_rel_err']:.2e}  KL mean {report['kl_mean']:.2e} "
        f"max {report['kl_max']:.2e}  top-1 agreement {report['top1_agreement']:.4f}")
  report["passed"] = worst <= args.rtol
  if args.json:
    from jaxvlm.io import write_json
    write_json(args.json, report)
  print("PASS" if report["passed"] else f"FAIL: worst relative error {worst:.2e} > {args.rtol}")
  return 0 if report["passed"] else 1
