"""VLM benchmark (lent GPU): Qwen2.5-VL-3B-shaped model, random bf16 weights, ours vs transformers.

Batch 8 prompts, each one 448×448 image (1024 patches -> 256 visual tokens) + 32 text tokens:

* time to first token: vision encoder + prefill + first greedy token (``max_new_tokens=1``);
* decode tokens/s: ``B * (n - 1) / (T(n) - T(1))`` for greedy generation of ``n = 64`` tokens.

Both models hold the same random weights (ours loaded from the transformers state dict through
our weight rules). Ours: ``attention_impl="cudnn"``; transformers: sdpa, ``generate``.
Run: ``PYTHONPATH=. python benchmarks/bench_vlm.py`` (writes $OUT/vlm.json).
"""

from __future__ import annotations

import inspect

import jax.numpy as jnp
import numpy as np
import torch
import transformers

from benchmarks.timing import markdown_table, median_seconds, torch_sync, write_results
from flax import nnx

from jaxvlm.generation import generate
from jaxvlm.models import config_from_hf, get_family, weights

IMG, START, END = 151655, 151652, 151653
QWEN25_VL_3B = dict(
    model_type="qwen2_5_vl", image_token_id=IMG, video_token_id=151656,
    vision_start_token_id=START, vision_end_token_id=END, tie_word_embeddings=True,
    text_config=dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008,
                     num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
                     rms_norm_eps=1e-6, max_position_embeddings=128000, tie_word_embeddings=True,
                     rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                      "mrope_section": [16, 24, 24]}),
    vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                       out_hidden_size=2048, fullatt_block_indexes=[7, 15, 23, 31],
                       window_size=112, patch_size=14, spatial_merge_size=2,
                       temporal_patch_size=2, tokens_per_second=2))


def inputs(batch: int, side: int, n_text: int, rng):
  grid = np.array([[1, side // 14, side // 14]] * batch)
  n_vis = side // 14 * side // 14 // 4
  text = rng.integers(0, 150000, (batch, n_text))
  ids = np.concatenate([text[:, :8], np.full((batch, 1), START), np.full((batch, n_vis), IMG),
                        np.full((batch, 1), END), text[:, 8:]], axis=1)
  px = rng.standard_normal((int(grid.prod(1).sum()), 3 * 2 * 14 * 14)).astype(np.float32)
  return ids, px, grid


def main(batch: int = 8, side: int = 448, n_text: int = 32, n_new: int = 64):
  rng = np.random.default_rng(0)
  ids, px, grid = inputs(batch, side, n_text, rng)
  mask = np.ones_like(ids)
  with torch.device("cuda"):
    hf_cfg = transformers.Qwen2_5_VLConfig(**{k: v for k, v in QWEN25_VL_3B.items()
                                              if k != "model_type"})
    hf = transformers.Qwen2_5_VLForConditionalGeneration._from_config(
        hf_cfg, attn_implementation="sdpa", dtype=torch.bfloat16).eval()
  family = get_family("qwen2_5_vl")
  cfg = config_from_hf(QWEN25_VL_3B, dtype="bfloat16", attention_impl="cudnn")
  tensors = {k: v.float().cpu().numpy() for k, v in hf.state_dict().items()
             if k != "lm_head.weight"}  # tied to the embeddings
  ours = weights.load_into(nnx.eval_shape(lambda: family.model_cls(cfg, rngs=nnx.Rngs(0))),
                           tensors, family.rules, ignore=family.ignore)
  del tensors
  px_j = jnp.asarray(px, jnp.bfloat16)

  def run_ours(n):
    prep = ours.prepare_inputs(ids, mask, px_j, grid)
    return generate(ours, ids, mask, n, **prep).sequences
  t_ids, t_mask = torch.tensor(ids, device="cuda"), torch.tensor(mask, device="cuda")
  extra = {}
  if "mm_token_type_ids" in inspect.signature(hf.model.forward).parameters:
    extra["mm_token_type_ids"] = (t_ids == IMG).long()
  t_px = torch.tensor(px, device="cuda", dtype=torch.bfloat16)
  t_grid = torch.tensor(grid, device="cuda")

  def run_hf(n):
    return hf.generate(input_ids=t_ids, attention_mask=t_mask, pixel_values=t_px,
                       image_grid_thw=t_grid, max_new_tokens=n, min_new_tokens=n,
                       do_sample=False, pad_token_id=0, **extra)

  times = {}
  with torch.inference_mode():
    for n in (1, n_new):
      times["ours", n] = median_seconds(lambda: run_ours(n), warmup=2, iters=5)
      times["hf", n] = median_seconds(lambda: run_hf(n), sync=torch_sync, warmup=1, iters=3)
    seq_ours = np.asarray(run_ours(n_new))[:, ids.shape[1]:]
    seq_hf = run_hf(n_new)[:, ids.shape[1]:].cpu().numpy()
  decode = {k: batch * (n_new - 1) / (times[k, n_new] - times[k, 1]) for k in ("ours", "hf")}
  case = f"B={batch}, {side}x{side} image + {n_text} text tokens, prompt {ids.shape[1]}"
  rows = [dict(metric="time to first token (ms)", case=case, ours=times["ours", 1] * 1e3,
               transformers=times["hf", 1] * 1e3, speedup=times["hf", 1] / times["ours", 1]),
          dict(metric="decode tokens/s", case=f"{case}, {n_new} new", ours=decode["ours"],
               transformers=decode["hf"], speedup=decode["ours"] / decode["hf"])]
  print(markdown_table(rows))
  agree = {"first_token": float(np.mean(seq_ours[:, 0] == seq_hf[:, 0])),
           "all_tokens": float(np.mean(seq_ours == seq_hf))}
  print("greedy agreement with transformers (bf16, same weights):", agree)
  print("written", write_results("vlm", rows, {"agreement": agree,
                                               "raw_seconds": {f"{k}_{n}": v for (k, n), v
                                                               in times.items()}}))


if __name__ == "__main__":
  main()
