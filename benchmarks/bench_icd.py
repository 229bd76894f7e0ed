"""ICD benchmark (lent GPU): 4-shot ICL inference and InfoScore scoring, ours vs transformers.

One Qwen2.5-VL folder with random weights (:func:`benchmarks.run_icd_real.qwen_folder`:
Qwen2.5-VL-3B shape, bf16, the published image-processor settings), loaded by both sides: ours
through :func:`jaxvlm.models.chat.load_vlm`, the anchor through ``transformers``'
``from_pretrained`` (sdpa). Prompts are the ICD method's own (:mod:`jaxvlm.methods.icd.icl`:
Lever-Plus's Qwen2.5-VL layout, ``shots`` x (image, ``Question:.. Short answer:..``) then the
query), encoded by the folder's processor through :func:`jaxvlm.data.vlm_inputs.encode`;
640 x 480 images (391 visual tokens each), batch 8.

* ICL inference: greedy generation of ``new`` (10) tokens, end to end (vision tower, M-RoPE
  positions, prefill, decode): ours :func:`jaxvlm.generation.generate` (cuDNN attention) vs
  ``Qwen2_5_VLForConditionalGeneration.generate``; speedup = transformers / ours.
* InfoScore scoring: the mean log-probability of each query's answer written in its answer slot
  (the unit of :func:`jaxvlm.methods.icd.beam_search`): ours
  :meth:`jaxvlm.methods.icd.VLMRunner.answer_logp`, which encodes each distinct image once and
  reuses its features in every prompt (as the beam search runs it), vs a transformers forward
  with the pixels + log-softmax gather (the vision tower per prompt, as Lever-Plus's
  ``get_cond_prob``); prompts/s.

GPU: ``PYTHONPATH=. python benchmarks/bench_icd.py`` (writes ``$OUT/icd.json``).
CPU smoke run: ``PYTHONPATH=. python benchmarks/bench_icd.py --tiny`` (the tiny Qwen2.5-VL of
:data:`benchmarks.run_icd_real.TINY`, float32, batch 2, 1 shot, 40 x 32 images).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import shutil
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers
from flax import nnx

from benchmarks import run_icd_real
from benchmarks.timing import markdown_table, median_seconds, torch_sync, write_results
from jaxvlm.data import synthetic_vqa, vlm_inputs
from jaxvlm.generation import generate
from jaxvlm.methods import icd
from jaxvlm.models.chat import load_vlm

FULL = dict(size="real", batch=8, shots=4, image=(640, 480), new=10, device="cuda",
            attention="cudnn", warmup=2, iters=5)
TINY = dict(size="tiny", batch=2, shots=1, image=(40, 32), new=3, device="cpu", attention="xla",
            warmup=1, iters=2)


def samples(num: int, image: tuple[int, int], seed: int = 0) -> list:
  """``num`` synthetic VQA samples with their scene resized to ``image`` (width, height)."""
  from PIL import Image
  return [dataclasses.replace(s, image=np.asarray(Image.fromarray(s.image).resize(image)))
          for s in synthetic_vqa.make_vqa_split(num, seed=seed, image_size=32)]


def param_counts(model) -> dict:
  state = nnx.state(model, nnx.Param)
  count = lambda sub: int(sum(np.prod(x.shape) for x in jax.tree.leaves(sub)))
  return {"vision": count(state["visual"]), "language": count(state["language_model"])}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tiny", action="store_true", help="tiny model on CPU (smoke run)")
  args = parser.parse_args(argv)
  s = TINY if args.tiny else FULL
  size = run_icd_real.SIZES[s["size"]]
  data = samples(s["batch"] * (s["shots"] + 1), s["image"])
  queries = data[:s["batch"]]
  shots = [data[s["batch"] + i * s["shots"]:s["batch"] + (i + 1) * s["shots"]]
           for i in range(s["batch"])]
  folder = tempfile.mkdtemp(prefix="bench_icd_")
  run_icd_real.qwen_folder(size, folder, [t for x in data for t in (x.question, *x.answers)])
  ours, processor = load_vlm(folder, dtype=size.dtype, attention_impl=s["attention"])
  torch_dtype = getattr(torch, size.dtype)
  with torch.device(s["device"]):
    hf = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(
        folder, dtype=torch_dtype, attn_implementation="sdpa").eval()
  shutil.rmtree(folder)  # both sides hold the weights in memory
  fmt = icd.PromptFormat()
  dev = s["device"]
  tensor = lambda x, dtype=torch.long: torch.tensor(np.asarray(x), device=dev, dtype=dtype)
  extra = lambda ids: ({"mm_token_type_ids": (ids == hf.config.image_token_id).long()}
                       if "mm_token_type_ids" in inspect.signature(hf.model.forward).parameters
                       else {})

  # ICL inference: the generation prompt after the query
  gen = vlm_inputs.encode(processor, [fmt.conversation(q, d) for q, d in zip(queries, shots)])
  gen_kw = vlm_inputs.generation_kwargs(ours, gen)
  gen_kw["pixel_values"] = jnp.asarray(gen_kw["pixel_values"], size.dtype)
  run_ours = lambda: generate(ours, gen["input_ids"], gen["attention_mask"], s["new"],
                              eos_token_id=(), **gen_kw).new_tokens
  t_ids, t_mask = tensor(gen["input_ids"]), tensor(gen["attention_mask"])
  t_px, t_grid = tensor(gen["pixel_values"], torch_dtype), tensor(gen["image_grid_thw"])

  def run_hf():
    out = hf.generate(input_ids=t_ids, attention_mask=t_mask, pixel_values=t_px,
                      image_grid_thw=t_grid, max_new_tokens=s["new"], min_new_tokens=s["new"],
                      do_sample=False, pad_token_id=processor.tokenizer.pad_token_id,
                      **extra(t_ids))
    return out[:, t_ids.shape[1]:]

  # InfoScore: the query's answer in its answer slot, no generation prompt
  runner = icd.VLMRunner(ours, processor, fmt, batch_size=s["batch"], pad_to=64,
                         feature_bucket=256)
  score = vlm_inputs.encode(processor, [fmt.conversation(q, d, answer=q.answer)
                                        for q, d in zip(queries, shots)],
                            add_generation_prompt=False)
  answer_mask = icd.answer_token_mask(processor.tokenizer, score["input_ids"],
                                      [[fmt.text(q, q.answer)] for q in queries],
                                      [[q.answer] for q in queries])
  s_ids, s_mask = tensor(score["input_ids"]), tensor(score["attention_mask"])
  s_px, s_grid = tensor(score["pixel_values"], torch_dtype), tensor(score["image_grid_thw"])
  s_loss = tensor(answer_mask[:, 1:], torch.float32)

  def score_hf():
    logits = hf(input_ids=s_ids, attention_mask=s_mask, pixel_values=s_px,
                image_grid_thw=s_grid, **extra(s_ids)).logits[:, :-1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, s_ids[:, 1:, None])[..., 0]
    return (logp * s_loss).sum(-1) / s_loss.sum(-1)

  score_ours = lambda: runner.answer_logp(queries, shots)
  times = {}
  with torch.inference_mode():
    times["icl_ours"] = median_seconds(run_ours, warmup=s["warmup"], iters=s["iters"])
    times["icl_hf"] = median_seconds(run_hf, sync=torch_sync, warmup=1,
                                     iters=max(s["iters"] - 2, 1))
    times["score_ours"] = median_seconds(score_ours, warmup=s["warmup"], iters=s["iters"])
    times["score_hf"] = median_seconds(score_hf, sync=torch_sync, warmup=1, iters=s["iters"])
    seq_ours, seq_hf = np.asarray(run_ours()), run_hf().cpu().numpy()
    lp_ours, lp_hf = np.asarray(score_ours()), score_hf().cpu().numpy()
  b = s["batch"]
  images = f"{s['shots'] + 1} images of {s['image'][0]}x{s['image'][1]}"
  case = f"B={b}, {s['shots']} shots + query ({images})"
  rows = [dict(metric="ICL inference s per batch (generate, vision included)",
               case=f"{case}, prompt {gen['input_ids'].shape[1]} tokens, {s['new']} new tokens",
               ours=times["icl_ours"], transformers=times["icl_hf"],
               speedup=times["icl_hf"] / times["icl_ours"]),
          dict(metric="InfoScore scoring prompts/s (ours: each image encoded once)",
               case=f"{case}, prompt {score['input_ids'].shape[1]} tokens with the answer",
               ours=b / times["score_ours"], transformers=b / times["score_hf"],
               speedup=times["score_hf"] / times["score_ours"])]
  print(markdown_table(rows))
  agree = {"greedy_tokens": float(np.mean(seq_ours == seq_hf)),
           "answer_logp_max_abs_diff": float(np.max(np.abs(lp_ours - lp_hf)))}
  print("agreement with transformers (same weights):", agree)
  info = {"agreement": agree, "raw_seconds": times, "params": param_counts(ours),
          "visual_tokens": np.asarray(gen["visual_tokens"]).tolist(), "settings": s,
          "tiny": args.tiny}
  print("written", write_results("icd", rows, info))
  return {"rows": rows, **info}


if __name__ == "__main__":
  main()
