"""ICD benchmark (lent GPU): 4-shot ICL inference and InfoScore scoring, ours vs transformers.

Qwen2.5-VL-3B-shaped model (``benchmarks.bench_vlm.QWEN25_VL_3B``), random weights in bf16,
the same weights in both (ours loaded from the transformers state dict through our rules).
Each prompt is the interleaved ICL prompt of :mod:`jaxvlm.methods.icd.icl`: ``shots`` x (image,
question, answer) then the query image and question; images are ``side``² (448² = 1024 patches
-> 256 visual tokens), ``text`` tokens per question / answer segment, batch 8.

* ICL inference: greedy generation of ``new`` (10) tokens, end to end (vision tower, M-RoPE
  positions, prefill, decode): ours :func:`jaxvlm.generation.generate` (cuDNN attention) vs
  ``Qwen2_5_VLForConditionalGeneration.generate`` (sdpa); speedup = transformers / ours.
* InfoScore scoring: ``P(answer | prompt)`` of a batch of the same prompts (the unit of
  :func:`jaxvlm.methods.icd.beam_search`): ours the jit-compiled
  :func:`jaxvlm.methods.icd.answer_logp` vs a transformers forward + log-softmax gather;
  prompts/s and the achieved TFLOP/s of ``2 x params x tokens`` (attention not counted).

GPU: ``PYTHONPATH=. python benchmarks/bench_icd.py`` (writes ``$OUT/icd.json``).
CPU smoke run: ``PYTHONPATH=. python benchmarks/bench_icd.py --tiny`` (tiny Qwen2.5-VL of
:func:`jaxvlm.training.vlm.tiny_vlm_config`, float32, batch 2, 1 shot, 32² images).
"""

from __future__ import annotations

import argparse
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers
from flax import nnx

from benchmarks.bench_vlm import QWEN25_VL_3B
from benchmarks.timing import markdown_table, median_seconds, torch_sync, write_results
from jaxvlm.data import vlm_batches
from jaxvlm.generation import generate
from jaxvlm.methods.icd import answer_logp
from jaxvlm.models import config_from_hf, get_family, weights

FULL = dict(batch=8, shots=4, side=448, text=16, answer=3, new=10, device="cuda",
            dtype="bfloat16", attention="cudnn", warmup=2, iters=5)
TINY = dict(batch=2, shots=1, side=32, text=6, answer=2, new=3, device="cpu", dtype="float32",
            attention="xla", warmup=1, iters=2)


def tiny_config() -> dict:
  from jaxvlm.training.vlm import tiny_vlm_config
  return tiny_vlm_config("qwen2_5_vl")


def icl_batch(cfg: dict, s: dict, rng) -> dict:
  """Left-aligned (all rows one length) ICL batch in the :func:`build_vlm_batch` layout, random
  text ids and pixels; ``loss_mask`` marks the last ``answer`` tokens (the scored answer)."""
  v = cfg["vision_config"]
  p, merge, t = v.get("patch_size", 14), v.get("spatial_merge_size", 2), v.get(
      "temporal_patch_size", 2)
  g = s["side"] // p
  n_vis = (g // merge) ** 2
  vocab = min(cfg["text_config"]["vocab_size"], cfg["image_token_id"], 150000)
  image = [cfg["vision_start_token_id"]] + [cfg["image_token_id"]] * n_vis + [
      cfg["vision_end_token_id"]]
  text = lambda n: rng.integers(3, vocab, n).tolist()
  rows = []
  for _ in range(s["batch"]):
    ids = [1]
    for _ in range(s["shots"]):
      ids += image + text(s["text"]) + text(s["answer"])
    rows.append(ids + image + text(s["text"]) + text(s["answer"]))
  ids = np.asarray(rows, np.int32)
  n_img = s["shots"] + 1
  loss = np.zeros_like(ids)
  loss[:, -s["answer"]:] = 1
  return {"input_ids": ids, "attention_mask": np.ones_like(ids), "loss_mask": loss,
          "pixel_values": rng.standard_normal((s["batch"], n_img, g, g, 3 * t * p * p)).astype(
              np.float32),
          "image_grid_thw": np.tile(np.array([1, g, g], np.int32), (s["batch"], n_img, 1))}


def build_models(cfg: dict, s: dict):
  """(ours, transformers) with the same random weights."""
  torch_dtype = getattr(torch, s["dtype"])
  with torch.device(s["device"]):
    hf_cfg = transformers.Qwen2_5_VLConfig(**{k: v for k, v in cfg.items()
                                              if k not in ("model_type", "architectures")})
    hf = transformers.Qwen2_5_VLForConditionalGeneration._from_config(
        hf_cfg, attn_implementation="sdpa", dtype=torch_dtype).eval()
  family = get_family("qwen2_5_vl")
  ours_cfg = config_from_hf(cfg, dtype=s["dtype"], attention_impl=s["attention"])
  tied = cfg.get("tie_word_embeddings", False)
  tensors = {k: v.float().cpu().numpy() for k, v in hf.state_dict().items()
             if not (tied and k == "lm_head.weight")}
  ours = weights.load_into(nnx.eval_shape(lambda: family.model_cls(ours_cfg, rngs=nnx.Rngs(0))),
                           tensors, family.rules, ignore=family.ignore)
  return ours, hf


def param_counts(model) -> dict:
  state = nnx.state(model, nnx.Param)
  count = lambda sub: int(sum(np.prod(x.shape) for x in jax.tree.leaves(sub)))
  return {"vision": count(state["visual"]), "language": count(state["language_model"])}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tiny", action="store_true", help="tiny model on CPU (smoke run)")
  args = parser.parse_args(argv)
  s = TINY if args.tiny else FULL
  cfg = tiny_config() if args.tiny else QWEN25_VL_3B
  rng = np.random.default_rng(0)
  batch = icl_batch(cfg, s, rng)
  ours, hf = build_models(cfg, s)
  dev, img = s["device"], cfg["image_token_id"]
  prompt = {k: batch[k][:, :-s["answer"]] for k in ("input_ids", "attention_mask")}
  t_px = torch.tensor(np.asarray(vlm_batches.generation_inputs(ours, batch)["pixel_values"]),
                      device=dev, dtype=getattr(torch, s["dtype"]))
  batch["pixel_values"] = jnp.asarray(batch["pixel_values"], s["dtype"])  # ours: model dtype
  gen_kw = vlm_batches.generation_inputs(ours, batch)
  batch["position_ids"] = ours.get_rope_index(
      batch["input_ids"], batch["image_grid_thw"].reshape(-1, 3))[0].transpose(1, 0, 2)

  def run_ours():
    return generate(ours, prompt["input_ids"], prompt["attention_mask"], s["new"],
                    eos_token_id=(), **gen_kw).sequences

  t_grid = torch.tensor(gen_kw["image_grid_thw"], device=dev)
  extra = lambda ids: ({"mm_token_type_ids": (ids == img).long()} if "mm_token_type_ids" in
                       inspect.signature(hf.model.forward).parameters else {})
  t_prompt = torch.tensor(prompt["input_ids"], device=dev, dtype=torch.long)
  t_full = torch.tensor(batch["input_ids"], device=dev, dtype=torch.long)
  t_loss = torch.tensor(batch["loss_mask"][:, 1:], device=dev, dtype=torch.float32)

  def run_hf():
    return hf.generate(input_ids=t_prompt, attention_mask=torch.ones_like(t_prompt),
                       pixel_values=t_px, image_grid_thw=t_grid, max_new_tokens=s["new"],
                       min_new_tokens=s["new"], do_sample=False, pad_token_id=0,
                       **extra(t_prompt))

  def score_hf():
    logits = hf(input_ids=t_full, pixel_values=t_px, image_grid_thw=t_grid,
                **extra(t_full)).logits[:, :-1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, t_full[:, 1:, None])[..., 0]
    return (logp * t_loss).sum(-1)

  score_ours = lambda: answer_logp(ours, batch)
  times = {}
  with torch.inference_mode():
    times["icl_ours"] = median_seconds(run_ours, warmup=s["warmup"], iters=s["iters"])
    times["icl_hf"] = median_seconds(run_hf, sync=torch_sync, warmup=1, iters=max(
        s["iters"] - 2, 1))
    times["score_ours"] = median_seconds(score_ours, warmup=s["warmup"], iters=s["iters"])
    times["score_hf"] = median_seconds(score_hf, sync=torch_sync, warmup=1, iters=s["iters"])
    seq_ours = np.asarray(run_ours())[:, prompt["input_ids"].shape[1]:]
    seq_hf = run_hf()[:, prompt["input_ids"].shape[1]:].cpu().numpy()
    lp_ours, lp_hf = np.asarray(score_ours()), score_hf().cpu().numpy()
  params = param_counts(ours)
  b, length = batch["input_ids"].shape
  n_patches = int(batch["image_grid_thw"].prod(-1).sum())
  flops = 2 * params["language"] * b * length + 2 * params["vision"] * n_patches
  case = (f"B={b}, {s['shots']} shots + query ({s['shots'] + 1} images of {s['side']}²), "
          f"prompt {prompt['input_ids'].shape[1]} tokens")
  rows = [dict(metric="ICL inference s (generate)", case=f"{case}, {s['new']} new tokens",
               ours=times["icl_ours"], transformers=times["icl_hf"],
               speedup=times["icl_hf"] / times["icl_ours"]),
          dict(metric="InfoScore scoring prompts/s", case=f"{case} + {s['answer']} answer tokens",
               ours=b / times["score_ours"], transformers=b / times["score_hf"],
               speedup=times["score_hf"] / times["score_ours"]),
          dict(metric="InfoScore scoring TFLOP/s (2 x params x tokens)", case=case,
               ours=flops / times["score_ours"] / 1e12,
               transformers=flops / times["score_hf"] / 1e12,
               speedup=times["score_hf"] / times["score_ours"])]
  print(markdown_table(rows))
  agree = {"greedy_tokens": float(np.mean(seq_ours == seq_hf)),
           "answer_logp_max_abs_diff": float(np.max(np.abs(lp_ours - lp_hf)))}
  print("agreement with transformers (same weights):", agree)
  extra_info = {"agreement": agree, "raw_seconds": times, "params": params,
                "flops_per_scoring_batch": flops, "settings": s, "tiny": args.tiny}
  print("written", write_results("icd", rows, extra_info))
  return {"rows": rows, **extra_info}


if __name__ == "__main__":
  main()
