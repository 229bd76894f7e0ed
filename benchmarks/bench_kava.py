"""KAVA train step and latent inference at the LLaMA-3.2-1B shape: jaxvlm vs PyTorch (lent GPU).

Train step (seed 003, issue 10): random weights, bf16 compute with float32 master weights, LoRA
(r 128, alpha 32, dropout 0.1 on q,k,v,o) + the latent projection (Linear-GELU-Linear-LayerNorm),
AdamW (wd 0.1) + global-norm clip 2. One step = the teacher pass over Q+CoT+A (with the answer
attention over the CoT recomputed for R-KV) + the student: question pass over Q <bot> <lat>*M,
T Jacobi passes of the M latents against the question cache, the answer pass; loss
CE(A|Z,Q) + CE(C,A|Q) + 10 CODI (smooth-L1, layer-wise std) + KV (smooth-L1, layer-wise std, at
the R-KV-selected entries, lambda 0.1). Ours: ``jaxvlm.training.Trainer.train_step`` with
``kava.make_loss_fn``. Anchor: ``transformers`` ``LlamaForCausalLM`` (sdpa) + ``peft`` LoRA under
``torch.autocast(bfloat16)``, the same passes written the straightforward way (a fresh
``DynamicCache`` of the question K/V per Jacobi iteration, R-KV with ``topk``), fused AdamW.
Batches are unpadded (every segment full), question 128 + CoT 128 + answer 16 tokens (the first 4
of the answer segment are the delimiter), batch 32, M 24, T 3.

FLOPs per step (``step_flops``; the same work on both sides; stated so the MFU is reproducible).
N_body = matmul parameters of the decoder layers (q,k,v,o, MLP), N_head = H x V (tied embedding
counted once, as the LM head), N_lora, N_prj = 2 H^2. Every pass gets gradients (the teacher pass
too: CE(C,A|Q) trains it; only its CODI / KV targets are stop-gradient). Per token of a pass:
  necessary:   4 N_body (forward + activation gradients; the frozen base needs no weight
               gradients) + 6 N_lora;
  convention:  6 N_body + 6 N_lora (the usual 6 N; reported as ``mfu_6n``);
plus the LM head (4 or 6 x N_head) only at positions whose logits enter a loss (teacher: CoT +
answer; student: answer), attention 3 x 4 L H_q D x (keys each query attends, causal) for
forward + backward, the projection 6 N_prj per latent update (M x T), and forward-only
extras: the answer queries' q_proj and scores over the teacher sequence for R-KV. The R-KV cosine
matrices (< 0.1 %) are not counted. Passes per sample: teacher Q+C+A (272 tokens), student
question Q+1+M (153), T x M Jacobi (72), answer 1+A (17). MFU = FLOPs / step time / peak, peak
989 TFLOP/s (H100/H200 SXM bf16 dense spec). tokens/s counts the batch's Q+C+A tokens.

Inference (ours only): latent generation (question pass, T Jacobi passes, then 16 greedy answer
tokens; ``kava.latent_generate``) vs CoT greedy decoding with ``jaxvlm.generation.generate``
(CoT 128 + answer 16 = 144 new tokens), batch 32, no early stop (random weights), questions/s.

Each part runs in its own subprocess (the JAX allocator would otherwise hold the GPU memory).

  PYTHONPATH=. python benchmarks/bench_kava.py [--steps 10] [--attention cudnn] [--remat]
  PYTHONPATH=. python benchmarks/bench_kava.py --tiny     # tiny shapes on CPU (smoke run)
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time

import numpy as np

from benchmarks.bench_training import LLAMA_1B, TARGETS
from benchmarks.timing import markdown_table, median_seconds, write_results

OPT = dict(lr=1e-5, weight_decay=0.1, grad_clip=2.0, schedule="constant")
FULL = dict(shape=LLAMA_1B, batch=32, q=128, cot=128, ans=16, prefix=4, latents=24,
            iterations=3, rank=128, special=(128002, 128003, 128004))  # reserved_special_token_0..2
TINY = dict(shape=dict(model_type="llama", vocab_size=256, hidden_size=64, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       head_dim=16, rms_norm_eps=1e-5, rope_theta=10000.0,
                       max_position_embeddings=256, tie_word_embeddings=True),
            batch=2, q=8, cot=8, ans=4, prefix=2, latents=3, iterations=2, rank=4,
            special=(253, 254, 255))
LORA = dict(alpha=32.0, dropout=0.1)
LAM, CODI_W = 0.1, 10.0


def setup(tiny: bool) -> dict:
  return TINY if tiny else FULL


def make_batch(s: dict, seed: int) -> dict:
  """An unpadded KAVA batch (numpy int32) with random tokens below the special ids."""
  rng = np.random.default_rng(seed)
  ids = lambda n: rng.integers(0, min(s["special"]), (s["batch"], n), dtype=np.int32)
  ones = lambda n: np.ones((s["batch"], n), np.int32)
  ans_loss = ones(s["ans"])
  ans_loss[:, :s["prefix"]] = 0
  return {"q_ids": ids(s["q"]), "q_mask": ones(s["q"]), "cot_ids": ids(s["cot"]),
          "cot_mask": ones(s["cot"]), "ans_ids": ids(s["ans"]), "ans_mask": ones(s["ans"]),
          "ans_loss": ans_loss}


def step_flops(s: dict) -> dict:
  """FLOPs of one KAVA train step (see the module docstring): necessary and 6 N convention."""
  c = s["shape"]
  h, v, n_l = c["hidden_size"], c["vocab_size"], c["num_hidden_layers"]
  hq, hkv, d, inter = (c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"],
                       c["intermediate_size"])
  b, lq, lc, la, m, t, r = (s[k] for k in ("batch", "q", "cot", "ans", "latents", "iterations",
                                           "rank"))
  n_body = n_l * (2 * h * hq * d + 2 * h * hkv * d + 3 * h * inter)
  n_head = h * v
  n_lora = n_l * r * (2 * (h + hq * d) + 2 * (h + hkv * d))
  n_prj = 2 * h * h
  keys = lambda first, n: n * first + n * (n + 1) // 2  # causal keys summed over n queries
  # (tokens, first slot, positions whose logits enter a loss)
  passes = [(lq + lc + la, 0, lc + la), (lq + 1 + m, 0, 0)] + [(m, lq + 1, 0)] * t + [
      (1 + la, lq + 1 + m, la)]
  tokens = sum(p[0] for p in passes)
  head = sum(p[2] for p in passes)
  attn = 3 * 4 * n_l * hq * d * sum(keys(first, n) for n, first, _ in passes)
  extra = 2 * n_l * la * hq * d * (h + lq + lc + la) + 6 * n_prj * m * t  # R-KV queries, prj
  common = b * (6 * n_lora * tokens + attn + extra)
  return {"necessary": b * (4 * n_body * tokens + 4 * n_head * head) + common,
          "convention_6n": b * (6 * n_body * tokens + 6 * n_head * head) + common,
          "pass_tokens": b * tokens, "n_body": n_body, "n_head": n_head, "n_lora": n_lora}


# ----- workers (each in its own process) -------------------------------------------------------
def _jax_model(s: dict, args, dropout: float):
  from jaxvlm import models
  from jaxvlm.layers import lora
  from jaxvlm.methods import kava
  from jaxvlm.training import remat_modules
  lm = models.from_config(s["shape"], dtype="float32" if args.tiny else "bfloat16",
                          param_dtype="float32", attention_impl=args.attention)
  lora.apply_lora(lm, TARGETS, s["rank"], LORA["alpha"], dropout)
  if args.remat:
    remat_modules(lm, r"layers\.\d+$")
  return kava.KavaModel(lm, "mlp", *s["special"])


def _peak_gib() -> float:
  import jax
  return (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use", 0) / 2**30


def jax_train(s: dict, args) -> dict:
  import jax
  from flax import nnx
  from jaxvlm.methods import kava
  from jaxvlm.training import TrainConfig, Trainer
  model = _jax_model(s, args, LORA["dropout"])
  cfg = kava.KavaConfig(method="kava", num_latents=s["latents"], iterations=s["iterations"],
                        lam=LAM)
  trainer = Trainer(model, OPT, kava.make_loss_fn(cfg, s["prefix"]), lambda seed, start: iter(()),
                    None, config=TrainConfig(steps=10**6, progress=False),
                    trainable=nnx.Any(nnx.LoRAParam, kava.LatentParam))
  batches = itertools.cycle([make_batch(s, i) for i in range(2)])
  step = lambda: trainer.train_step(next(batches))
  sync = lambda m: {k: float(x) for k, x in m.items()}
  t0 = time.perf_counter()
  first = sync(step())
  compile_s = time.perf_counter() - t0
  sec = median_seconds(step, warmup=args.warmup, iters=args.steps, sync=sync)
  return dict(step_s=sec, compile_s=compile_s, peak_gib=_peak_gib(), first_metrics=first,
              version=f"jax {jax.__version__}", attention=args.attention)


def torch_train(s: dict, args) -> dict:
  import peft
  import torch
  import transformers
  dev = "cuda" if torch.cuda.is_available() else "cpu"
  cfg = transformers.LlamaConfig(**{k: x for k, x in s["shape"].items() if k != "model_type"})
  cfg._attn_implementation = "sdpa"
  torch.manual_seed(0)
  with torch.device(dev):
    lm = transformers.LlamaForCausalLM(cfg)
    h = cfg.hidden_size
    prj = torch.nn.Sequential(torch.nn.Linear(h, h), torch.nn.GELU(), torch.nn.Linear(h, h),
                              torch.nn.LayerNorm(h))
  lm = peft.get_peft_model(lm, peft.LoraConfig(r=s["rank"], lora_alpha=LORA["alpha"],
                                               lora_dropout=LORA["dropout"],
                                               target_modules=list(TARGETS), task_type="CAUSAL_LM"))
  lm.train()
  params = [p for p in lm.parameters() if p.requires_grad] + list(prj.parameters())
  opt = torch.optim.AdamW(params, lr=OPT["lr"], weight_decay=OPT["weight_decay"],
                          fused=dev == "cuda")
  batches = itertools.cycle([{k: torch.tensor(x, device=dev, dtype=torch.long)
                               for k, x in make_batch(s, i).items()} for i in range(2)])

  def step():
    with torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
      loss, parts = torch_kava_loss(lm.get_base_model(), prj, next(batches), s)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, OPT["grad_clip"])
    opt.step()
    opt.zero_grad(set_to_none=True)
    return {"loss": loss, **parts}

  def sync(metrics):
    if dev == "cuda":
      torch.cuda.synchronize()
    return {k: float(x.detach()) for k, x in metrics.items()}

  t0 = time.perf_counter()
  first = sync(step())
  compile_s = time.perf_counter() - t0
  sec = median_seconds(step, warmup=args.warmup, iters=args.steps, sync=sync)
  peak = torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda" else 0.0
  return dict(step_s=sec, compile_s=compile_s, peak_gib=peak, first_metrics=first,
              version=f"torch {torch.__version__}, transformers {transformers.__version__}, "
                      f"peft {peft.__version__}", attention="sdpa")


def _std_distance(target, student):
  """Smooth-L1 of the difference divided by the target's std (teacher target detached)."""
  import torch
  import torch.nn.functional as F
  target = target.detach().float()
  diff = (target - student.float()) / (target.std(unbiased=False) + 1e-6)
  return F.smooth_l1_loss(diff, torch.zeros_like(diff))


def torch_kava_loss(model, prj, batch: dict, s: dict):
  """The KAVA loss written the straightforward way on a ``LlamaForCausalLM`` (LoRA inside)."""
  import torch
  import torch.nn.functional as F
  from transformers import DynamicCache
  from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
  cfg = model.config
  hq, hkv, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
  q, cot, ans = batch["q_ids"], batch["cot_ids"], batch["ans_ids"]
  (b, lq), lc, la = q.shape, cot.shape[1], ans.shape[1]
  m, p = s["latents"], s["prefix"]
  bot, eot, lat = s["special"]
  # teacher: Q + CoT + A, CE over CoT + A
  ids = torch.cat([q, cot, ans], 1)
  t = model(input_ids=ids, use_cache=True, output_hidden_states=True)
  teacher_ce = F.cross_entropy(t.logits[:, lq - 1:-1].flatten(0, 1).float(), ids[:, lq:].flatten())
  # R-KV: answer attention over the CoT (recomputed for the answer queries), cosine redundancy
  tk, tv = [], []
  with torch.no_grad():
    sl = ids.shape[1]
    pos = torch.arange(sl, device=ids.device)[None].expand(b, sl)
    cos, sin = model.model.rotary_emb(t.hidden_states[0], pos)
    a0 = lq + lc
    for i, layer in enumerate(model.model.layers):
      keys, values = t.past_key_values.layers[i].keys, t.past_key_values.layers[i].values
      x = layer.input_layernorm(t.hidden_states[i][:, a0:])
      qa = layer.self_attn.q_proj(x).view(b, la, hq, d).transpose(1, 2)
      qa, _ = apply_rotary_pos_emb(qa, qa, cos[:, a0:], sin[:, a0:])
      scores = qa.float() @ keys.repeat_interleave(hq // hkv, 1).float().transpose(-1, -2)
      future = torch.arange(sl, device=ids.device)[None] > torch.arange(a0, sl,
                                                                        device=ids.device)[:, None]
      probs = torch.softmax((scores * d ** -0.5).masked_fill(future, float("-inf")), -1)
      att = probs[..., lq:a0].view(b, hkv, hq // hkv, la, lc).mean(2)
      importance = att.mean(2)
      kc = F.normalize(keys[:, :, lq:a0].float(), dim=-1)
      sim = kc @ kc.transpose(-1, -2)
      mean_cos = (sim.sum(-1) - sim.diagonal(dim1=-2, dim2=-1)) / (lc - 1)
      score = LAM * importance + (1 - LAM) * torch.softmax(-mean_cos, -1)
      idx = score.topk(m, -1).indices.sort(-1).values[..., None].expand(-1, -1, -1, d)
      tk.append(keys[:, :, lq:a0].gather(2, idx))
      tv.append(values[:, :, lq:a0].gather(2, idx))
  # student: Q <bot> <lat>*M, then T Jacobi iterations against the question cache
  head = torch.tensor([bot] + [lat] * m, device=q.device).expand(b, -1)
  pre = model.model(input_ids=torch.cat([q, head], 1), use_cache=True)
  qk = [(layer.keys[:, :, :lq + 1], layer.values[:, :, :lq + 1])
        for layer in pre.past_key_values.layers]
  emb = prj(pre.last_hidden_state[:, lq:lq + m])
  for it in range(s["iterations"]):
    cache = DynamicCache()
    for i, (k, v) in enumerate(qk):
      cache.update(k, v, i)
    out = model.model(inputs_embeds=emb, past_key_values=cache, use_cache=True)
    if it < s["iterations"] - 1:
      emb = torch.cat([emb[:, :1], prj(out.last_hidden_state)[:, :-1]], 1)
  cache = out.past_key_values
  sk = [layer.keys[:, :, lq + 1:] for layer in cache.layers]
  sv = [layer.values[:, :, lq + 1:] for layer in cache.layers]
  a_ids = torch.cat([torch.full((b, 1), eot, device=q.device), ans], 1)
  st = model(input_ids=a_ids, past_key_values=cache, use_cache=True, output_hidden_states=True)
  student_ce = F.cross_entropy(st.logits[:, p:la].flatten(0, 1).float(), ans[:, p:].flatten())
  codi = torch.stack([_std_distance(th[:, a0 + p - 1], sh[:, p]) for th, sh in
                      zip(t.hidden_states[1:], st.hidden_states[1:])]).mean()
  kv = 0.5 * (torch.stack([_std_distance(x, y) for x, y in zip(tk, sk)]).mean()
              + torch.stack([_std_distance(x, y) for x, y in zip(tv, sv)]).mean())
  parts = {"student_ce": student_ce, "teacher_ce": teacher_ce, "codi": codi, "kv": kv}
  return student_ce + teacher_ce + CODI_W * codi + kv, parts


def jax_infer(s: dict, args) -> dict:
  import jax
  import jax.numpy as jnp
  from jaxvlm.generation import generate
  from jaxvlm.methods import kava
  model = _jax_model(s, args, 0.0)
  model.eval()
  batch = make_batch(s, 0)
  q, qm = jnp.asarray(batch["q_ids"]), jnp.asarray(batch["q_mask"])
  prefix = batch["ans_ids"][0, :s["prefix"]].tolist()
  answer = s["ans"] - s["prefix"]
  cot_new = s["cot"] + s["ans"]
  latent = lambda: kava.latent_generate(model, q, qm, prefix, num_latents=s["latents"],
                                        iterations=s["iterations"], max_new_tokens=answer,
                                        eos_token_id=-1)[0]
  cot = lambda: generate(model.lm, q, qm, cot_new, eos_token_id=(), pad_token_id=0).sequences
  rows = []
  latent_name = f"latent: M {s['latents']}, T {s['iterations']}, {answer} answer tokens"
  for name, fn, passes in ((latent_name, latent, 1 + s["iterations"] + answer),
                           (f"CoT greedy ({cot_new} new tokens)", cot, cot_new)):
    sec = median_seconds(fn, warmup=1, iters=args.infer_iters)
    rows.append(dict(case=name, batch_s=sec, questions_per_s=s["batch"] / sec,
                     forward_passes=passes))
  return dict(rows=rows, peak_gib=_peak_gib(), version=f"jax {jax.__version__}",
              attention=args.attention)


WORKERS = {"jax": jax_train, "torch": torch_train, "infer": jax_infer}


def run_worker(name: str, args, attention: str) -> dict:
  cmd = [sys.executable, __file__, "--worker", name, "--steps", str(args.steps), "--warmup",
         str(args.warmup), "--infer-iters", str(args.infer_iters), "--attention", attention]
  cmd += ["--remat"] * args.remat + ["--tiny"] * args.tiny
  proc = subprocess.run(cmd, capture_output=True, text=True)
  if proc.returncode != 0:
    print(proc.stderr[-4000:], file=sys.stderr)
    lines = proc.stderr.strip().splitlines()
    return {"error": lines[-1] if lines else f"exit {proc.returncode}"}
  return json.loads(proc.stdout.strip().splitlines()[-1])


def run_part(name: str, args) -> dict:
  """A worker's result; a JAX worker that fails with a fused attention is re-run with ``xla``."""
  attention = "sdpa" if name == "torch" else args.attention
  r = run_worker(name, args, attention)
  if "error" in r and name != "torch" and attention != "xla":
    r = dict(run_worker(name, args, "xla"), failed_attention=f"{attention}: {r['error']}")
  return r


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--tiny", action="store_true", help="tiny shapes, float32 (CPU smoke run)")
  p.add_argument("--steps", type=int, default=10, help="timed train steps (median)")
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--infer-iters", type=int, default=5)
  p.add_argument("--attention", default="cudnn", help="jaxvlm attention_impl (GPU)")
  p.add_argument("--remat", action="store_true", help="rematerialise each decoder layer (JAX)")
  p.add_argument("--parts", default="jax,torch,infer", help="workers to run, in this order")
  p.add_argument("--peak", type=float, default=989e12, help="peak bf16 FLOP/s for the MFU")
  p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.tiny and args.attention == "cudnn":
    args.attention = "xla"
  s = setup(args.tiny)
  if args.worker:
    print(json.dumps(WORKERS[args.worker](s, args)))
    return
  flops = step_flops(s)
  data_tokens = s["batch"] * (s["q"] + s["cot"] + s["ans"])
  results = {name: run_part(name, args) for name in args.parts.split(",")}
  rows = []
  torch_s = results.get("torch", {}).get("step_s")
  for name, label in (("jax", "jaxvlm Trainer + kava.make_loss_fn"),
                      ("torch", "transformers + peft + torch")):
    r = results.get(name)
    if r is None:
      continue
    if "error" in r:
      rows.append(dict(framework=label, error=r["error"][:120]))
      continue
    rows.append(dict(framework=f"{label} ({r['version']}, attention {r['attention']})",
                     step_ms=1e3 * r["step_s"], tokens_per_s=data_tokens / r["step_s"],
                     pass_tokens_per_s=flops["pass_tokens"] / r["step_s"],
                     mfu=flops["necessary"] / r["step_s"] / args.peak,
                     mfu_6n=flops["convention_6n"] / r["step_s"] / args.peak,
                     vs_torch=torch_s / r["step_s"] if torch_s else float("nan"),
                     peak_gib=r["peak_gib"], compile_s=r["compile_s"]))
  print(f"\nKAVA train step: batch {s['batch']}, Q {s['q']} + CoT {s['cot']} + A {s['ans']}, "
        f"M {s['latents']}, T {s['iterations']}; {flops['necessary'] / 1e12:.2f} TFLOP/step "
        f"necessary, {flops['convention_6n'] / 1e12:.2f} with 6 N; peak "
        f"{args.peak / 1e12:.0f} TFLOP/s\n")
  ok = [row for row in rows if "error" not in row]
  if ok:
    print(markdown_table(ok))
  for row in rows:
    if "error" in row:
      print(f"{row['framework']}: {row['error']}")
  for name in ("jax", "torch", "infer"):
    r = results.get(name, {})
    if "failed_attention" in r:
      print(f"{name}: re-run with attention xla after {r['failed_attention'][:200]}")
    if "first_metrics" in r:
      print(f"{name} first-step loss terms:",
            ", ".join(f"{k} {v:.4g}" for k, v in sorted(r["first_metrics"].items())))
  infer = results.get("infer", {})
  if "rows" in infer:
    print("\n" + markdown_table(infer["rows"]))
  elif infer:
    print(f"inference: {infer.get('error')}")
  print("written", write_results("kava", rows + infer.get("rows", []), extra={
      "flops": flops, "shape": s, "args": vars(args), "workers": results}))


if __name__ == "__main__":
  main()
