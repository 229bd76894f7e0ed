"""AdaLLaVA's real preset end to end on the lent GPU, with random weights at the LLaVA-1.5-7B shape.

1. Writes a real-format LLaVA-1.5 folder (``llava-1.5-7b-hf`` layout: ``config.json`` with the
   7B shape of ``benchmarks/bench_adallava.py``, random bf16 safetensors, ``LlavaProcessor`` with
   the CLIP-336 image processor and the LLaVA-1.5 conversation template,
   ``generation_config.json``). The tokenizer is a LLaMA-style stand-in: a byte-level BPE with
   LLaVA's special tokens (``<unk> <s> </s> <image> <pad>``, ``<image>`` = id 3) trained by
   :func:`jaxvlm.models.tiny.train_tokenizer`; the config keeps the real 32064-row vocabulary,
   so ids past the tokenizer's (the preset's latency token 32002 among them) are unused rows.
2. Writes a VQAv2 slice (questions / annotations json, COCO-named images of mixed sizes, which
   the CLIP processor resizes and crops to 336) and a small multi-turn LLaVA instruction json.
3. Runs ``jaxvlm run --config configs/adallava.py:llava7b`` on them: a few fine-tune steps, the
   ``token_budget`` sweep 1.0 / 0.5 / 0.25 at latency 1.0 and the ``latency_budget`` sweep
   1.0 / 0.75 / 0.5 / 0.25 (ms per batch: the whole budgeted pipeline, best of the repeats).
4. Times ``transformers`` ``LlavaForConditionalGeneration`` (sdpa, bf16) loaded from the same
   folder on the same first batch (the processor's ids, mask and pixels), as many new tokens.

Writes ``OUT/adallava_real.json``: ms per batch per point, ours at 1.0 over ``transformers``,
time(0.5) / time(1.0) on both axes, the inversions (fewer executed FLOPs but slower) and whether
the targets hold (>= 1.5x transformers at 1.0, time(0.5) <= 0.6 time(1.0) on both axes, no
inversions).
GPU: ``PYTHONPATH=. python benchmarks/run_adallava_real.py OUT``; CPU check of the same code path
at a tiny shape: ``--size tiny``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from types import SimpleNamespace

import numpy as np

from benchmarks import preset_run

CACHE_DIR = os.environ.get("JAX_COMPILATION_CACHE_DIR", "/tmp/jax_cache_adallava_real")
COLORS = ("red", "green", "blue", "yellow", "white", "black")
SIZES = {"real": ((640, 480), (480, 640), (500, 375), (336, 336)),
         "tiny": ((64, 48), (48, 64), (56, 56), (70, 40))}
TOKEN_BUDGETS, LATENCY_BUDGETS = (0.25, 0.5, 1.0), (0.25, 0.5, 0.75, 1.0)


def settings(size: str) -> dict:
  """Shape, dtype and run sizes of ``size`` (the tiny one runs on the CPU in seconds)."""
  from benchmarks.bench_adallava import LLAVA15_7B, TINY
  if size == "real":
    return dict(shape=LLAVA15_7B, dtype="bfloat16", device="cuda", questions=16, instruct=32,
                batch=8, train_batch=4, steps=4, new=10, repeats=3,
                overrides={"model.adallava.trainable": "lora"})  # a 7B full fine-tune's
    # Adam state would not leave room on one card
  return dict(shape=TINY, dtype="float32", device="cpu", questions=4, instruct=8, batch=2,
              train_batch=2, steps=2, new=3, repeats=1,
              overrides={"model.dtype": "float32", "model.param_dtype": "float32",
                         "model.adallava.prefix_layers": 1,
                         "model.adallava.controller_hidden": 32})


def write_folder(folder: str, s: dict) -> str:
  """The real-format LLaVA-1.5 folder (module docstring); kept when already written."""
  if os.path.exists(os.path.join(folder, "config.json")):
    return folder
  from jaxvlm import models
  from jaxvlm.models import tiny
  shape = s["shape"]
  texts = [f"what color is the {c} square? {c}" for c in COLORS] * 20
  tokenizer = tiny.train_tokenizer("llava", texts, vocab_size=2000)
  vision = shape["vision_config"]
  hf = tiny.tiny_vlm_config("llava", tokenizer, vision["image_size"], vision_config=vision,
                            text_config=shape["text_config"], vision_feature_layer=-2,
                            image_seq_length=shape["image_seq_length"])
  model = models.from_config(hf, seed=0, dtype=s["dtype"], param_dtype=s["dtype"])
  os.makedirs(folder, exist_ok=True)
  models.save_pretrained(model, folder, source_config=hf)
  del model
  tiny.save_processor("llava", folder, tokenizer, vision["image_size"])
  processor = os.path.join(folder, "processor_config.json")
  with open(processor) as f:  # the real patch size (the tiny processor writes 8)
    conf = json.load(f)
  with open(processor, "w") as f:
    json.dump({**conf, "patch_size": vision["patch_size"]}, f, indent=2)
  tiny.write_generation_config(folder, tokenizer, "llava")
  return folder


def _image(rng, size: tuple[int, int], color: str) -> np.ndarray:
  w, h = size
  rgb = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220),
         "yellow": (230, 220, 20), "white": (250, 250, 250), "black": (5, 5, 5)}[color]
  image = rng.integers(0, 80, (h, w, 3)).astype(np.uint8)
  image[h // 4:3 * h // 4, w // 4:3 * w // 4] = rgb
  return image


def write_data(root: str, size: str, s: dict) -> dict[str, str]:
  """A VQAv2 folder and a multi-turn LLaVA instruction json under ``root`` (kept when there)."""
  from jaxvlm.data import llava_instruct, synthetic_vqa
  files = {"questions_json": os.path.join(root, "vqa", "questions.json"),
           "annotations_json": os.path.join(root, "vqa", "annotations.json"),
           "image_dir": os.path.join(root, "vqa", "images"),
           "instruct_json": os.path.join(root, "instruct.json"),
           "instruct_images": os.path.join(root, "instruct_images")}
  if os.path.exists(files["instruct_json"]):
    return files
  rng = np.random.default_rng(0)
  sizes, n = SIZES[size], s["questions"]
  samples = [SimpleNamespace(
      image_id=100 + i, question_id=1000 + i, question="What color is the square?",
      question_type="what color is the", answer_type="other", answer=COLORS[i % 6],
      answers=[COLORS[i % 6]] * 10, image=_image(rng, sizes[i % len(sizes)], COLORS[i % 6]))
      for i in range(n)]
  synthetic_vqa.write_vqa_folder(samples, os.path.join(root, "vqa"))
  items = []
  for i in range(s["instruct"]):
    color = COLORS[(i + 1) % 6]
    items.append((f"instruct_{i:05d}", _image(rng, sizes[i % len(sizes)], color),
                  [("What color is the square?", color), ("Is there a square?", "Yes")]))
  llava_instruct.write_llava_instruct(files["instruct_json"], files["instruct_images"], items)
  return files


def run_preset(workdir: str, folder: str, data: dict, s: dict) -> dict:
  """``jaxvlm run`` of ``configs/adallava.py:llava7b`` on the written folder and data."""
  overrides = {
      "model.path": folder, **{f"data.{k}": v for k, v in data.items()}, "data.limit": 0,
      "data.instruct_limit": 0,
      "data.max_new_tokens": s["new"], "train.steps": s["steps"],
      "train.batch_size": s["train_batch"], "train.checkpoint_every": 0,
      "optimizer.warmup_steps": 1, "sweep.token_budgets": str(TOKEN_BUDGETS).replace(" ", ""),
      "sweep.latency_budgets": str(LATENCY_BUDGETS).replace(" ", ""),
      "sweep.batch_size": s["batch"], "sweep.latency_repeats": s["repeats"], **s["overrides"]}
  preset_run.run("configs/adallava.py:llava7b", workdir, overrides,
                 env=preset_run.child_env(JAX_COMPILATION_CACHE_DIR=CACHE_DIR), check=True)
  with open(os.path.join(workdir, "metrics.json")) as f:
    return json.load(f)


def transformers_ms(folder: str, data: dict, s: dict) -> float:
  """``transformers`` LLaVA, ms per batch (median of 3 after a warm-up) on the first batch of
  the sweep (the same encoded prompts and pixels), ``new`` tokens each."""
  import torch
  import transformers

  from benchmarks.timing import median_seconds, torch_sync
  from jaxvlm.data import vqa
  from jaxvlm.methods.adallava import evaluate
  from jaxvlm.models.chat import load_processor
  records = vqa.read_vqa(data["questions_json"], data["annotations_json"], data["image_dir"])
  batch = evaluate.prepare_batches(load_processor(folder), records, s["batch"])[0][0]
  dt = getattr(torch, s["dtype"])
  model = transformers.LlavaForConditionalGeneration.from_pretrained(
      folder, dtype=dt, attn_implementation="sdpa").to(s["device"]).eval()
  args = {k: torch.tensor(np.asarray(batch[k]), device=s["device"])
          for k in ("input_ids", "attention_mask")}
  args["pixel_values"] = torch.tensor(np.asarray(batch["pixel_values"]), device=s["device"],
                                      dtype=dt)
  run = lambda: model.generate(**args, max_new_tokens=s["new"], min_new_tokens=s["new"],
                               do_sample=False, pad_token_id=0)
  with torch.inference_mode():
    return 1e3 * median_seconds(run, sync=torch_sync, warmup=1, iters=3)


def targets(metrics: dict, hf_ms: float) -> dict:
  """Ratios and the issue's targets from the run's two sweeps."""
  ms = {axis: {r[f"{axis}_budget"]: 1e3 * r["latency_s"] for r in metrics["sweeps"][axis]}
        for axis in ("token", "latency")}
  half = {axis: ms[axis][0.5] / ms[axis][1.0] for axis in ms}
  inversions = {axis: metrics["tradeoff"][axis]["latency_inversions"] for axis in ms}
  speedup = hf_ms / ms["token"][1.0]
  return {"ms_per_batch": ms, "transformers_ms_per_batch": hf_ms,
          "speedup_vs_transformers_at_1.0": speedup, "time_0.5_over_1.0": half,
          "inversions": inversions,
          "met": {"speedup_1.5x": speedup >= 1.5,
                  "half_budget_0.6x": all(v <= 0.6 for v in half.values()),
                  "no_inversions": not any(inversions.values())}}


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("out", help="folder for adallava_real.json (and the work files)")
  parser.add_argument("--size", choices=("real", "tiny"), default="real")
  parser.add_argument("--work", help="folder for the model folder, data and run "
                      "(default OUT/work)")
  args = parser.parse_args(argv)
  # this process only writes the folder (then frees its device memory) and runs transformers
  os.environ["XLA_PYTHON_CLIENT_ALLOCATOR"] = "platform"
  s = settings(args.size)
  work = args.work or os.path.join(args.out, "work")
  t0 = time.perf_counter()
  folder = write_folder(os.path.join(work, "llava-1.5-7b-random"), s)
  data = write_data(os.path.join(work, "data"), args.size, s)
  t_files = time.perf_counter() - t0
  metrics = run_preset(os.path.join(work, "run"), folder, data, s)
  t_run = time.perf_counter() - t0 - t_files
  result = {"size": args.size, **targets(metrics, transformers_ms(folder, data, s)),
            "rows": {axis: [{k: r[k] for k in ("latency_budget", "token_budget", "num_keep",
                                               "layers", "units", "flops", "latency_s",
                                               "exact_match", "empty_answers",
                                               "first_token_eos")}
                            for r in metrics["sweeps"][axis]] for axis in ("token", "latency")},
            "seconds": {"write_files": t_files, "jaxvlm_run": t_run,
                        "total": time.perf_counter() - t0}}
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "adallava_real.json"), "w") as f:
    json.dump(result, f, indent=2)
  print(json.dumps({k: result[k] for k in ("ms_per_batch", "transformers_ms_per_batch",
                                           "time_0.5_over_1.0", "met", "seconds")}, indent=1))
  return result


if __name__ == "__main__":
  main()
