"""SGL's real preset end to end on the lent GPU, with random weights at the real shapes.

1. Writes real-format InternVL2 remote-code folders (``internvl_chat`` config.json layout:
   ``vision_config`` + ``llm_config`` + ``template``, safetensors, the InternVL2 processor
   settings, an InternLM2-format tokenizer stand-in: byte-level BPE with InternLM2's special
   tokens and the InternVL2 chat template, :mod:`jaxvlm.models.tiny`): the 2B guide
   (InternViT-300M-448px + InternLM2-1.8B) and the 8B decoder (the same InternViT weights, so
   shared vision holds, + InternLM2.5-7B).
2. Writes a TextVQA slice in SGL's layout (``data/textvqa/textvqa_val.jsonl`` with a single
   ``answer``, ``textvqa_val_annotations.json``, images under the data root): generated images of
   mixed sizes: a quarter square (one tile), the rest 4:3 at three sizes (six tiles + thumbnail
   at ``max_num`` 6, as most TextVQA photos).
3. Runs ``jaxvlm run --config configs/sgl.py:internvl2_2b_8b`` on them twice: without early exit,
   then with the early-exit threshold at the median exit score of the keep-0.4 run (every other
   run is then read back from the run cache).
4. Times the PyTorch 8B (``benchmarks/bench_sgl.py``'s anchor: InternViT + ``mlp1`` in torch,
   ``transformers`` LLaMA-layout 7B decoder, sdpa, bf16) on the same prompts and tiles, batch by
   batch as the run grouped them.

Writes ``OUT/sgl_real.json``: ms per sample per stage of every run over its warm batches (a batch
whose visual-token counts an earlier batch had), the early-exit share, and PyTorch / ours per
sample on the same warm batches (ours without the host-side preprocessing, which the anchor is
not timed on).
GPU: ``PYTHONPATH=. python benchmarks/run_sgl_real.py OUT``; CPU check of the same code path at
tiny shapes: ``--size tiny``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from benchmarks import preset_run

WORDS = ("open", "exit", "store", "coffee", "main", "street", "sale", "bus", "stop", "time")
SIZES = {"real": ((448, 448), (960, 720), (1024, 768), (1280, 960)),
         "tiny": ((28, 28), (48, 36), (56, 42), (64, 48))}


def shapes(size: str) -> dict:
  from benchmarks.bench_sgl import FULL, TINY, VIT_300M
  if size == "real":
    return dict(vision=VIT_300M, guide=FULL["guide"], decoder=FULL["decoder"], dtype="bfloat16",
                samples=32, batch=8, device="cuda")
  vision = dict(TINY["vision"], image_size=28)
  return dict(vision=vision, guide=TINY["guide"], decoder=TINY["decoder"], dtype="float32",
              samples=8, batch=4, device="cpu")


def write_folders(root: str, s: dict) -> dict[str, str]:
  """The guide and decoder folders (module docstring); the decoder gets the guide's tower."""
  from jaxvlm import models
  from jaxvlm.methods.sgl import with_vision_tower
  from jaxvlm.models import tiny
  texts = [f"what does the sign say? {w}" for w in WORDS] * 20
  tokenizer = tiny.train_tokenizer("internvl_chat", texts, vocab_size=2000)
  image = s["vision"]["image_size"]
  folders, guide = {}, None
  for role in ("guide", "decoder"):
    folder = os.path.join(root, role)
    folders[role] = folder
    if os.path.exists(os.path.join(folder, "config.json")):
      continue
    hf = tiny.tiny_vlm_config("internvl_chat", tokenizer, image, vision_config=s["vision"],
                              llm_config=dict(s[role], vocab_size=max(s[role]["vocab_size"],
                                                                      len(tokenizer))))
    model = models.from_config(hf, seed=int(role == "decoder"), dtype=s["dtype"],
                               param_dtype=s["dtype"])
    if role == "decoder":
      with_vision_tower(model, guide or models.load_pretrained(
          folders["guide"], dtype=s["dtype"], image_token_id=hf["img_context_token_id"]))
    models.save_pretrained(model, folder, source_config=hf)
    tiny.save_processor("internvl_chat", folder, tokenizer, image)
    tiny.write_generation_config(folder, tokenizer, "internvl_chat")
    guide = model if role == "guide" else None
    del model
  return folders


def write_textvqa(root: str, size: str, n: int) -> dict[str, str]:
  """SGL's TextVQA val layout under ``root`` (module docstring); kept when already written (the
  run cache keys results by the files' identity)."""
  from PIL import Image, ImageDraw
  rng = np.random.default_rng(0)
  data = os.path.join(root, "data", "textvqa")
  files = {"jsonl": os.path.join(data, "textvqa_val.jsonl"),
           "annotations": os.path.join(data, "textvqa_val_annotations.json"), "data_root": root}
  if os.path.exists(files["annotations"]):
    return files
  os.makedirs(os.path.join(data, "train_images"), exist_ok=True)
  rows, annotations = [], []
  for i in range(n):
    w, h = SIZES[size][i % len(SIZES[size])]
    image = Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8))
    word = WORDS[i % len(WORDS)]
    ImageDraw.Draw(image).text((w // 4, h // 2), word, fill=(255, 255, 255))
    rel = f"data/textvqa/train_images/{i:06d}.jpg"
    image.save(os.path.join(root, rel))
    rows.append({"question_id": 34602 + i, "question": "what does the sign say?", "image": rel,
                 "answer": word})
    annotations.append({"question_id": 34602 + i, "answers": [{"answer": word}] * 10})
  with open(files["jsonl"], "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  with open(files["annotations"], "w") as f:
    json.dump({"annotations": annotations}, f)
  return files


def run_preset(workdir: str, folders: dict, data: dict, s: dict, threshold: float) -> dict:
  """``jaxvlm run`` of the real preset on the written folders and data; its metrics."""
  overrides = {
      "decoder.path": folders["decoder"], "guide.path": folders["guide"],
      "trust_remote_code": False, "hybrid.vision_path": "", "runs.hybrid_modes": "",
      "runs.guide_modes": "baseline,short_cot", "runs.keeps": "1.0,0.4,0.09",
      "runs.selections": "guide", "runs.early_exit_keep": 0.4,
      "runs.early_exit_threshold": threshold, "runs.batch_size": s["batch"], "data.limit": 0,
      "data.jsonl": data["jsonl"], "data.annotations": data["annotations"],
      "data.data_root": data["data_root"], "data.check_datasets.textvqa": "",
      "data.check_datasets.vqav2": "", "sgl.guide_max_new_tokens": 16}
  preset_run.run("configs/sgl.py:internvl2_2b_8b", workdir, overrides, check=True)
  with open(os.path.join(workdir, "metrics.json")) as f:
    return json.load(f)


def torch_anchor(folders: dict, data: dict, s: dict, max_new: int) -> dict:
  """PyTorch 8B seconds per sample on the decoder's own prompts and tiles, in the run's batches
  (samples ordered by visual-token count, ``batch`` at a time; one model for all batches). As in
  the run's summaries, a batch is warm when an earlier batch had its visual-token counts."""
  from benchmarks import bench_sgl
  from benchmarks.timing import median_seconds, torch_sync
  from jaxvlm.data.textvqa import read_internvl_vqa
  from jaxvlm.methods.sgl import Prompter
  from jaxvlm.models.chat import load_processor
  prompter = Prompter(load_processor(folders["decoder"]), max_num=6)
  samples = sorted(read_internvl_vqa(data["jsonl"], data["annotations"], data["data_root"]),
                   key=prompter.num_visual)
  text = "{question} Answer the question using a single word or phrase."
  with open(os.path.join(folders["decoder"], "config.json")) as f:
    hf = json.load(f)
  spec = dict(decoder=dict(s["decoder"], vocab_size=hf["llm_config"]["vocab_size"]),
              vision=s["vision"], dtype=s["dtype"], device=s["device"],
              image=hf["img_context_token_id"], new=max_new)
  models = bench_sgl.torch_models(spec)
  rows, seen = [], set()
  for start in range(0, len(samples), s["batch"]):
    chunk = samples[start:start + s["batch"]]
    shape = tuple(prompter.num_visual(x) for x in chunk)
    batch = prompter.batch(chunk, [text.format(question=x.question) for x in chunk])
    batch = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}
    seconds = median_seconds(bench_sgl.torch_8b(spec, batch, models), sync=torch_sync, warmup=1,
                             iters=3)
    rows.append({"tiles": int(batch["pixel_values"].shape[0]), "rows": len(chunk),
                 "seconds": seconds, "warm": shape in seen})
    seen.add(shape)
  per_sample = lambda rs: sum(r["seconds"] for r in rs) / sum(r["rows"] for r in rs)
  warm = [r for r in rows if r["warm"]]
  return {"seconds_per_sample": per_sample(rows),
          "warm_seconds_per_sample": per_sample(warm) if warm else None, "batches": rows}


def _log(message: str, t0: float = time.time()) -> None:
  print(f"[run_sgl_real +{time.time() - t0:.0f}s] {message}", flush=True)


def _timing(summary: dict) -> dict:
  """One run's cost from its summary: ms per sample per stage over the warm batches (all batches
  when none is warm), the compute total (every stage but the host-side preprocessing, which the
  PyTorch anchor is not timed on) and the run's accuracy / exit share / token counts."""
  warm = summary["warm_samples"] > 0
  stages = summary["warm_seconds_per_sample" if warm else "seconds_per_sample"]
  ms = {k: 1e3 * v for k, v in stages.items()}
  return {"ms_per_sample": ms, "ms_per_sample_compute": sum(v for k, v in ms.items()
                                                             if k != "preprocess"),
          "warm_samples": summary["warm_samples"], "accuracy": summary["accuracy"],
          "exit_share": summary["exit_share"], "mean_visual": summary["mean_visual"],
          "mean_kept": summary["mean_kept"]}


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("out", help="folder for sgl_real.json (and the work files)")
  parser.add_argument("--size", choices=("real", "tiny"), default="real")
  parser.add_argument("--work", help="folder for the model folders, data and runs "
                      "(default OUT/work)")
  args = parser.parse_args(argv)
  s = shapes(args.size)
  work = args.work or os.path.join(args.out, "work")
  folders = write_folders(os.path.join(work, "models"), s)
  _log(f"model folders ready: {folders}")
  data = write_textvqa(os.path.join(work, "InternVL"), args.size, s["samples"])
  first = run_preset(os.path.join(work, "run"), folders, data, s, 0.0)
  _log("preset run without early exit done")
  with open(os.path.join(first["keep"]["0.4_guide"]["folder"], "results.json")) as f:
    threshold = float(np.median([r["score"] for r in json.load(f)]))
  m = run_preset(os.path.join(work, "run"), folders, data, s, threshold)
  _log(f"preset run with early exit at {threshold:.4g} done")
  anchor = torch_anchor(folders, data, s, max_new=10)
  _log("PyTorch 8B timed")
  runs = {f"keep {k}": _timing(v) for k, v in m["keep"].items()}
  runs.update({f"mode {k}": _timing(v) for k, v in m["guide_modes"].items()})
  runs["early exit, keep 0.4"] = _timing(m["early_exit"]["with_exit"])
  runs["keep 0.4, no exit (same run)"] = _timing(m["early_exit"]["without_exit"])
  torch_all = 1e3 * anchor["seconds_per_sample"]
  torch_warm = 1e3 * (anchor["warm_seconds_per_sample"] or anchor["seconds_per_sample"])
  ratio = lambda v: (torch_warm if v["warm_samples"] else torch_all) / v["ms_per_sample_compute"]
  result = {"size": args.size, "threshold": threshold, "runs": runs,
            "pytorch_8b_ms_per_sample": torch_all, "pytorch_8b_warm_ms_per_sample": torch_warm,
            "pytorch_8b_batches": anchor["batches"],
            "speedup_vs_pytorch_8b": {k: ratio(v) for k, v in runs.items()}}
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "sgl_real.json"), "w") as f:
    json.dump(result, f, indent=2)
  print(json.dumps(result["speedup_vs_pytorch_8b"], indent=1))
  return result


if __name__ == "__main__":
  main()
