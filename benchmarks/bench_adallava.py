"""AdaLLaVA latency benchmark (lent GPU): LLaVA-1.5-7B shape, random bf16 weights, ours per budget
vs transformers ``LlavaForConditionalGeneration`` at full budget, in the same run.

Batch 8 prompts, each ``<s>`` + 576 image tokens (336 px, patch 14) + 39 text tokens (40 text
tokens), 16 new tokens (greedy, EOS never stops either side). Ours: the whole budgeted pipeline
per call: vision tower + controller + ``select_tokens`` + ``keep_visual_tokens`` + latency token
(``adallava.budget_inputs``), then ``generate`` (jit prefill + ``while_loop`` decode) with the
unchosen layers skipped (``lax.cond``; one layer plan per batch, ``shared_plan=True``, so a
layer no row runs is skipped for the batch); ``attention_impl="cudnn"``. At budget ``b``:
``K = round(576 b)`` visual tokens and ``max(floor(32 b), 8)`` layers (8 always-on prefix layers).
Anchor: ``transformers`` sdpa, ``generate(max_new_tokens=16, min_new_tokens=16)`` with every
token and layer. Medians after warm-up. Targets: ours at 1.0 >= 1.5x transformers; ours at 0.5
<= 0.6x ours at 1.0.

``--granularity head``: inside the chosen layers only some KV-head groups (and their MLP rows)
run, their weight slices gathered (``adallava.unit_counts``: at budget ``b``, ``U = floor(32 G b)
- 8 G`` units after the prefix, in ``n = ceil(U / G)`` layers of ``ceil(U / n)`` units, ``G =
32``); writes ``$OUT/adallava_head.json``. The default budgets give whole layers there (the same
plan as layers); ``--budgets 1.0 0.6 0.5 0.4`` times partial ones (0.6: 12 layers of 30 units).

Run: ``PYTHONPATH=. python benchmarks/bench_adallava.py`` (writes ``$OUT/adallava.json``);
``--tiny``: a small LLaVA in float32 on CPU (smoke run, checked by tests/test_bench_adallava.py).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.6")  # leave room for the torch model

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks.timing import (markdown_table, median_seconds, torch_sync,  # noqa: E402
                               write_results)
from jaxvlm import models  # noqa: E402
from jaxvlm.generation import generate  # noqa: E402
from jaxvlm import frozen  # noqa: E402
from jaxvlm.methods import adallava as ada  # noqa: E402

IMG, LAT = 32000, 32002  # LLaVA-1.5's <image>; an unused row of its 32064-entry vocabulary
LLAVA15_7B = dict(
    model_type="llava", image_token_index=IMG, image_seq_length=576, vision_feature_layer=-2,
    vision_feature_select_strategy="default", projector_hidden_act="gelu",
    vision_config=dict(model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096,
                       num_hidden_layers=24, num_attention_heads=16, image_size=336,
                       patch_size=14, hidden_act="quick_gelu", projection_dim=768),
    text_config=dict(model_type="llama", vocab_size=32064, hidden_size=4096,
                     intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5))
TINY = dict(
    LLAVA15_7B, image_seq_length=16,
    vision_config=dict(LLAVA15_7B["vision_config"], hidden_size=32, intermediate_size=64,
                       num_hidden_layers=2, num_attention_heads=2, image_size=56,
                       projection_dim=32),
    text_config=dict(LLAVA15_7B["text_config"], hidden_size=64, intermediate_size=128,
                     num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4))
BUDGETS = (1.0, 0.75, 0.5, 0.25)


def prompts(shape: dict, batch: int, n_text: int, rng) -> tuple[np.ndarray, np.ndarray]:
  """``<s>`` + N image tokens + ``n_text - 1`` random text tokens per row; pixel values."""
  v = shape["vision_config"]
  n = (v["image_size"] // v["patch_size"]) ** 2
  text = rng.integers(3, IMG, (batch, n_text - 1))
  ids = np.concatenate([np.ones((batch, 1), np.int64), np.full((batch, n), IMG), text], axis=1)
  px = rng.standard_normal((batch, 3, v["image_size"], v["image_size"])).astype(np.float32)
  return ids, px


def build_ours(shape: dict, dtype: str, attention: str, prefix: int,
               granularity: str = "layer") -> ada.AdaLlava:
  vlm = models.from_config(shape, seed=0, dtype=dtype, param_dtype=dtype, attention_impl=attention)
  return ada.AdaLlava(vlm, ada.AdaConfig(LAT, prefix_layers=prefix, shared_plan=True,
                                         granularity=granularity), nnx.Rngs(1))


def build_hf(shape: dict, dtype, device: str):
  cfg = transformers.LlavaConfig(**{k: v for k, v in shape.items() if k != "model_type"})
  with torch.device(device):
    return transformers.LlavaForConditionalGeneration._from_config(
        cfg, attn_implementation="sdpa", dtype=dtype).eval()


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--tiny", action="store_true", help="small LLaVA, float32, CPU (smoke run)")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--text", type=int, default=40, help="text tokens per prompt (incl. <s>)")
  p.add_argument("--new", type=int, default=16, help="new tokens")
  p.add_argument("--iters", type=int, default=5)
  p.add_argument("--granularity", choices=("layer", "head"), default="layer",
                 help="what the scheduler picks: layers, or KV-head groups inside layers")
  p.add_argument("--budgets", type=float, nargs="+", default=BUDGETS,
                 help="budgets to time (must include 1.0 and 0.5, the targets' budgets); e.g. "
                 "0.6 0.4 give partial layers with --granularity head")
  args = p.parse_args(argv)
  if not {1.0, 0.5} <= set(args.budgets):
    p.error(f"--budgets: got {args.budgets}, expected a list including 1.0 and 0.5")
  shape = TINY if args.tiny else LLAVA15_7B
  dtype, device = ("float32", "cpu") if args.tiny else ("bfloat16", "cuda")
  layers = shape["text_config"]["num_hidden_layers"]
  rng = np.random.default_rng(0)
  ids, px = prompts(shape, args.batch, args.text, rng)
  mask = np.ones_like(ids)
  ours = build_ours(shape, dtype, "xla" if args.tiny else "cudnn", prefix=layers // 4,
                    granularity=args.granularity)
  px_j = jax.numpy.asarray(px, dtype)

  def run_ours(budget):
    inp = ada.budget_inputs(ours, ids, mask, px_j, latency_budget=budget, token_budget=budget)
    return generate(ours, inp.input_ids, inp.attention_mask, args.new, eos_token_id=(),
                    pad_token_id=0, **inp.generate_kwargs()).sequences

  hf = build_hf(shape, getattr(torch, dtype), device)
  t_ids, t_mask = (torch.tensor(a, device=device) for a in (ids, mask))
  t_px = torch.tensor(px, device=device, dtype=getattr(torch, dtype))

  def run_hf():
    return hf.generate(input_ids=t_ids, attention_mask=t_mask, pixel_values=t_px,
                       max_new_tokens=args.new, min_new_tokens=args.new, do_sample=False,
                       pad_token_id=0)

  with torch.inference_mode():
    t_hf = median_seconds(run_hf, sync=torch_sync, warmup=1, iters=max(args.iters - 2, 1))
    hf_new = run_hf().shape[1] - ids.shape[1]
  del hf
  n = ids.shape[1] - args.text
  rows, times = [], {}
  for b in args.budgets:
    with frozen.freeze(ours):
      times[b] = median_seconds(lambda: run_ours(b), warmup=2, iters=args.iters)
    inp = ada.budget_inputs(ours, ids, mask, px_j, latency_budget=b, token_budget=b)
    plan = ada.unit_plan(ours, inp).max(0)  # the batch's plan (shared): [L] or [L, G]
    units = plan if plan.ndim == 2 else np.outer(plan, np.ones(shape["text_config"][
        "num_key_value_heads"]))
    rows.append(dict(budget=b, visual_tokens=int(inp.num_keep[0]),
                     layers=int(units.max(-1).sum()), units=int(units.sum()),
                     ours_ms=times[b] * 1e3, transformers_full_ms=t_hf * 1e3,
                     speedup_vs_transformers=t_hf / times[b],
                     time_vs_ours_full=times[b] / times[1.0]))
  out_len = np.asarray(run_ours(1.0)).shape[1] - (n + args.text + 1)
  targets = {"ours_1.0_speedup_vs_transformers": t_hf / times[1.0],
             "ours_1.0_speedup_target": 1.5,
             "ours_0.5_over_ours_1.0": times[0.5] / times[1.0], "ours_0.5_target": 0.6,
             "met": bool(t_hf / times[1.0] >= 1.5 and times[0.5] / times[1.0] <= 0.6)}
  print(markdown_table(rows))
  print("targets:", targets)
  case = {"batch": args.batch, "visual_tokens": n, "text_tokens": args.text,
          "new_tokens": args.new, "new_tokens_transformers": int(hf_new),
          "new_tokens_ours": int(out_len), "dtype": dtype, "shape": "tiny" if args.tiny else
          "llava-1.5-7b", "prefix_layers": layers // 4, "granularity": args.granularity}
  name = "adallava" if args.granularity == "layer" else "adallava_head"
  print("written", write_results(name, rows, {"case": case, "targets": targets}))
  return {"rows": rows, "targets": targets, "case": case}


if __name__ == "__main__":
  main()
