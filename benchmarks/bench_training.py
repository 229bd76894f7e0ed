"""Training-step throughput of a LLaMA-3.2-1B-shaped model: jaxvlm Trainer vs transformers+PyTorch.

Random weights, sequence 2048, bf16 compute with float32 master weights, AdamW (weight decay 0.1,
clip 1.0), full fine-tune and LoRA (r 128, alpha 32, dropout 0.1 on q,k,v,o). Each framework and
mode runs in its own subprocess (the JAX allocator would otherwise hold the GPU memory).

FLOPs per token (stated so the MFU is reproducible): full = 6 N + 6 L S H_q D (causal attention,
forward + backward); LoRA = 4 N + 6 L S H_q D (no weight gradients for the frozen base; the
adapters' own FLOPs are < 1 % and not counted). N = parameters used by matmuls (tied embedding
counted once, as the LM head). MFU = FLOPs/token x tokens/s / peak (default 989 TFLOP/s, H100
SXM bf16 dense).

  python benchmarks/bench_training.py [--out DIR] [--steps 20] [--batch 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

LLAMA_1B = dict(model_type="llama", vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                rms_norm_eps=1e-5, rope_theta=500000.0, max_position_embeddings=131072,
                tie_word_embeddings=True,
                rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
LORA = dict(rank=128, alpha=32.0, dropout=0.1)
OPT = dict(lr=1e-5, weight_decay=0.1, grad_clip=1.0)


def flops_per_token(n_params: int, seq: int, lora: bool) -> float:
  c = LLAMA_1B
  attn = 6 * c["num_hidden_layers"] * seq * c["num_attention_heads"] * c["head_dim"]
  return (4 if lora else 6) * n_params + attn


def random_ids(batch: int, seq: int, step: int):
  import numpy as np
  return np.random.default_rng(step).integers(0, LLAMA_1B["vocab_size"], (batch, seq), np.int32)


def time_steps(step_fn, sync, warmup: int, steps: int) -> tuple[list[float], float]:
  t0 = time.perf_counter()
  sync(step_fn(0))
  compile_s = time.perf_counter() - t0
  for i in range(1, warmup):
    sync(step_fn(i))
  times = []
  for i in range(steps):
    t0 = time.perf_counter()
    sync(step_fn(warmup + i))
    times.append(time.perf_counter() - t0)
  return times, compile_s


def jax_worker(mode: str, args) -> dict:
  import jax
  from flax import nnx
  from jaxvlm import models
  from jaxvlm.layers import lora
  from jaxvlm.training import TrainConfig, Trainer, causal_lm_loss, remat_modules
  model = models.from_config(LLAMA_1B, dtype="bfloat16", param_dtype="float32",
                             attention_impl=args.attention)
  n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  trainable = nnx.Param
  if mode == "lora":
    lora.apply_lora(model, TARGETS, **LORA)
    trainable = nnx.LoRAParam
  if args.remat:
    remat_modules(model, r"layers\.\d+$")
  ids = [random_ids(args.batch, args.seq, i) for i in range(4)]
  trainer = Trainer(model, dict(OPT, schedule="constant"), causal_lm_loss,
                    lambda seed, start: iter(()), None,
                    config=TrainConfig(steps=10**6, progress=False), trainable=trainable)
  step = lambda i: trainer.train_step({"input_ids": ids[i % 4]})["loss"]
  times, compile_s = time_steps(step, lambda x: float(x), args.warmup, args.steps)
  stats = jax.devices()[0].memory_stats() or {}
  return dict(n_params=int(n_params), times=times, compile_s=compile_s,
              peak_gib=stats.get("peak_bytes_in_use", 0) / 2**30, version=f"jax {jax.__version__}")


def torch_worker(mode: str, args) -> dict:
  import torch
  import transformers
  cfg = transformers.LlamaConfig(**{k: v for k, v in LLAMA_1B.items() if k != "model_type"})
  cfg._attn_implementation = "sdpa"
  with torch.device("cuda"):
    model = transformers.LlamaForCausalLM(cfg)
  n_params = sum(p.numel() for p in model.parameters())
  if mode == "lora":
    import peft
    model = peft.get_peft_model(model, peft.LoraConfig(
        r=LORA["rank"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
        target_modules=list(TARGETS), task_type="CAUSAL_LM"))
  model.train()
  params = [p for p in model.parameters() if p.requires_grad]
  opt = torch.optim.AdamW(params, lr=OPT["lr"], weight_decay=OPT["weight_decay"], fused=True)
  ids = [torch.tensor(random_ids(args.batch, args.seq, i), device="cuda", dtype=torch.long)
         for i in range(4)]

  def step(i):
    with torch.autocast("cuda", dtype=torch.bfloat16):
      loss = model(input_ids=ids[i % 4], labels=ids[i % 4]).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, OPT["grad_clip"])
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss

  def sync(loss):
    torch.cuda.synchronize()
    return float(loss)

  times, compile_s = time_steps(step, sync, args.warmup, args.steps)
  return dict(n_params=int(n_params), times=times, compile_s=compile_s,
              peak_gib=torch.cuda.max_memory_allocated() / 2**30,
              version=f"torch {torch.__version__}, transformers {transformers.__version__}")


def run_worker(framework: str, mode: str, args) -> dict:
  cmd = [sys.executable, __file__, "--worker", f"{framework}:{mode}", "--steps", str(args.steps),
         "--warmup", str(args.warmup), "--batch", str(args.batch), "--seq", str(args.seq),
         "--attention", args.attention] + (["--remat"] if args.remat else [])
  proc = subprocess.run(cmd, capture_output=True, text=True)
  if proc.returncode != 0:
    print(proc.stderr[-3000:], file=sys.stderr)
    return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--out", default=os.environ.get("OUT", "."))
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--batch", type=int, default=4)
  p.add_argument("--seq", type=int, default=2048)
  p.add_argument("--attention", default="cudnn", help="jaxvlm attention_impl")
  p.add_argument("--remat", action="store_true", help="rematerialise each decoder layer (JAX)")
  p.add_argument("--modes", default="full,lora")
  p.add_argument("--frameworks", default="jax,torch")
  p.add_argument("--peak", type=float, default=989e12, help="peak bf16 FLOP/s for MFU")
  p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.worker:
    framework, mode = args.worker.split(":")
    result = (jax_worker if framework == "jax" else torch_worker)(mode, args)
    print(json.dumps(result))
    return
  rows = []
  for mode in args.modes.split(","):
    for framework in args.frameworks.split(","):
      r = run_worker(framework, mode, args)
      r.update(framework=framework, mode=mode)
      if "times" in r:
        med = statistics.median(r["times"])
        r["step_s"], r["tokens_per_s"] = med, args.batch * args.seq / med
        r["mfu"] = flops_per_token(r["n_params"], args.seq, mode == "lora") * r["tokens_per_s"] / args.peak
      rows.append(r)
      print(json.dumps({k: v for k, v in r.items() if k != "times"}), flush=True)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "bench_training.json"), "w") as f:
    json.dump({"args": vars(args), "rows": rows}, f, indent=2)
  print(f"\nbatch {args.batch} x seq {args.seq}, median of {args.steps} steps after {args.warmup} "
        f"warm-up, peak {args.peak / 1e12:.0f} TFLOP/s\n")
  print("| mode | framework | step (ms) | tokens/s | MFU | vs torch | peak mem (GiB) | compile (s) |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    if "error" in r:
      print(f"| {r['mode']} | {r['framework']} | error: {r['error'][:80]} | | | | | |")
      continue
    ref = next((x for x in rows if x["mode"] == r["mode"] and x["framework"] == "torch"
                and "tokens_per_s" in x), None)
    ratio = f"{r['tokens_per_s'] / ref['tokens_per_s']:.2f}x" if ref else "-"
    print(f"| {r['mode']} | {r['framework']} ({r['version']}) | {1e3 * r['step_s']:.1f} | "
          f"{r['tokens_per_s']:.0f} | {100 * r['mfu']:.1f}% | {ratio} | {r['peak_gib']:.1f} | "
          f"{r['compile_s']:.0f} |")


if __name__ == "__main__":
  main()
