"""Diffusion-LLM benchmark (lent GPU): LLaDA-8B-shaped model, random bf16 weights.

LLaDA sampling of prompt 4096 + gen 256, block 32, 64 steps, temperature 0, low-confidence
remasking, batch 1:
  * ours dense (jit ``fori_loop`` sampler, cuDNN attention);
  * ours adaptive sparse (SparseD: skip 0.2, select 0.3 with per-head ``relative`` keep ratios from
    random importance, block 128, isolated selection; ``pallas_kernels.sparse_attention``);
  * anchor: a straightforward PyTorch LLaDA sampler loop (generate.py) on ``transformers``'
    ``LlamaForCausalLM`` run bidirectionally (``is_causal`` off, 4-D all-zero mask), sdpa, bf16.
Also checks the sparse kernel against its reference on this geometry with the selection used, and
times one attention layer (kernel vs cuDNN) and one model forward (dense vs sparse masks).

Prompt-length sweep (``--sweep 4096,16384,32768,65536``): gen 256, block 32, 64 steps, batch 1 at
each prompt length for ``--variants`` dense, sparse (the SparseD plan above), cached (DualCache,
dense attention) and cached_sparse (DualCache + SparseD). Each case is compiled ahead of time
(compile seconds reported apart), then timed; peak memory is the compiled program's arguments +
temporaries + outputs (``memory_analysis``); tokens are compared with the dense run of the same
prompt. Cases that run out of memory are recorded as such. Results are rewritten after every case.
``--select 0.3,0.2`` runs each sparse variant once per SparseD select value (default 0.3).

Run: ``PYTHONPATH=. python benchmarks/bench_diffusion.py`` (writes $OUT/diffusion.json) or
``PYTHONPATH=. python benchmarks/bench_diffusion.py --sweep 32768 --variants dense,sparse``
(writes $OUT/diffusion_sweep.json).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # torch shares the GPU

import numpy as np  # noqa: E402

from benchmarks.timing import markdown_table, median_seconds, torch_sync, write_results  # noqa: E402

LLADA_8B = dict(model_type="llada", d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32,
                mlp_hidden_size=12288, vocab_size=126464, embedding_size=126464,
                rope_theta=500000.0, rms_norm_eps=1e-5, weight_tying=False,
                mask_token_id=126336)
PROMPT, GEN, BLOCK, STEPS = 4096, 256, 32, 64
SPARSE = dict(select=0.3, skip=0.2, block_size=128)


def torch_llada_seconds(prompt: np.ndarray) -> float:
  """generate.py's loop (temperature 0, low_confidence, cfg 0) on transformers' Llama."""
  import torch
  import transformers
  c = LLADA_8B
  cfg = transformers.LlamaConfig(
      vocab_size=c["vocab_size"], hidden_size=c["d_model"], intermediate_size=c["mlp_hidden_size"],
      num_hidden_layers=c["n_layers"], num_attention_heads=c["n_heads"],
      num_key_value_heads=c["n_kv_heads"], rope_theta=c["rope_theta"],
      rms_norm_eps=c["rms_norm_eps"], max_position_embeddings=8192)
  with torch.device("cuda"):
    model = transformers.LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa",
                                                        dtype=torch.bfloat16).eval()
  for layer in model.model.layers:
    layer.self_attn.is_causal = False
  mask_id = c["mask_token_id"]
  seq = PROMPT + GEN
  full = torch.zeros(1, 1, seq, seq, dtype=torch.bfloat16, device="cuda")

  @torch.inference_mode()
  def generate():
    x = torch.full((1, seq), mask_id, dtype=torch.long, device="cuda")
    x[:, :PROMPT] = torch.as_tensor(prompt, device="cuda")
    num_blocks = GEN // BLOCK
    steps = STEPS // num_blocks
    for b in range(num_blocks):
      block_mask = x[:, PROMPT + b * BLOCK:PROMPT + (b + 1) * BLOCK] == mask_id
      n = block_mask.sum(1, keepdim=True)
      transfer = torch.zeros(1, steps, dtype=torch.long, device="cuda") + n // steps
      transfer[0, :int(n[0, 0] % steps)] += 1
      for i in range(steps):
        mask_index = x == mask_id
        logits = model(x, attention_mask=full).logits
        x0 = torch.argmax(logits, dim=-1)
        p = torch.softmax(logits.float(), dim=-1)
        x0_p = torch.gather(p, -1, x0[..., None])[..., 0]
        x0_p[:, PROMPT + (b + 1) * BLOCK:] = -np.inf
        x0 = torch.where(mask_index, x0, x)
        conf = torch.where(mask_index, x0_p, -np.inf)
        _, idx = torch.topk(conf[0], k=int(transfer[0, i]))
        x[0, idx] = x0[0, idx]
    return x

  t = median_seconds(generate, warmup=1, iters=2, sync=torch_sync)
  del model
  torch.cuda.empty_cache()
  return t


VARIANTS = ("dense", "sparse", "cached", "cached_sparse")


def sweep_plan(graphdef, variant: str, prompt_len: int):
  """The sampler plan of one sweep variant (SparseD skip and block as in the 4k run, DualCache)."""
  from jaxvlm.generation import block_cache, diffusion
  from jaxvlm.methods.sparse_dllm import sparsed
  cache = block_cache.CacheConfig("dual") if variant.startswith("cached") else None
  if variant in ("dense", "cached"):
    return diffusion.DensePlan(graphdef) if cache is None else block_cache.CachedPlan(graphdef,
                                                                                      cache)
  scfg = sparsed.SparseDConfig(steps=STEPS, block_size=SPARSE["block_size"], skip=SPARSE["skip"],
                               gen_start=prompt_len)
  return sparsed.SparseDPlan(graphdef, scfg, cache=cache)


def sweep_cases(variants: list[str], selects: list[float]) -> list[tuple[str, float | None]]:
  """(variant, select) pairs: each sparse variant once per ``select``, the others once."""
  return [(v, s) for v in variants
          for s in (selects if v.endswith("sparse") else [None])]


def run_sweep(prompts: list[int], variants: list[str], selects: list[float]):
  """Times every (prompt length, variant, select) case; one JSON rewritten after each."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from jaxvlm.generation import diffusion
  from jaxvlm.methods.sparse_dllm import keep_ratio
  from jaxvlm.models import from_config

  rng = np.random.default_rng(0)
  model = from_config(LLADA_8B, dtype="bfloat16", attention_impl="cudnn")
  graphdef, params = nnx.split(model)
  del model
  importance = rng.gamma(2.0, 1.0, (LLADA_8B["n_layers"], LLADA_8B["n_kv_heads"]))
  sample = dict(steps=STEPS, gen_length=GEN, block_length=BLOCK, mask_id=LLADA_8B["mask_token_id"])
  rows, dense_tokens = [], {}
  for plen in prompts:
    prompt = jnp.asarray(rng.integers(0, LLADA_8B["mask_token_id"], (1, plen)), jnp.int32)
    for variant, select in sweep_cases(variants, selects):
      keep = jnp.asarray(keep_ratio.adaptive_keep_ratios(importance, select or SPARSE["select"],
                                                         "relative"))
      plan = sweep_plan(graphdef, variant, plen)
      run = jax.jit(lambda p, x, st, plan=plan: diffusion.llada_generate(
          plan, p, x, jax.random.key(0), state=st, **sample).tokens)
      row = dict(prompt=plen, variant=variant, select=select)
      try:
        t0 = time.perf_counter()
        compiled = run.lower(params, prompt, keep).compile()
        row["compile_s"] = time.perf_counter() - t0
        mem = compiled.memory_analysis()
        row["peak_gib"] = (mem.argument_size_in_bytes + mem.temp_size_in_bytes
                           + mem.output_size_in_bytes - mem.alias_size_in_bytes) / 2**30
        t0 = time.perf_counter()
        tokens = jax.block_until_ready(compiled(params, prompt, keep))
        row["seconds"] = time.perf_counter() - t0
        row["tok_s"] = GEN / row["seconds"]
      except Exception as e:  # noqa: BLE001 -- out of memory is a result of the sweep
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        print(plen, variant, row["error"], flush=True)
        rows.append(row)
        write_results("diffusion_sweep", rows)
        continue
      gen = np.asarray(tokens[:, plen:])
      if variant == "dense":
        dense_tokens[plen] = gen
      if plen in dense_tokens:
        row["agreement_with_dense"] = float(np.mean(gen == dense_tokens[plen]))
      dense = next((r for r in rows if r["prompt"] == plen and r["variant"] == "dense"
                    and "seconds" in r), None)
      if dense is not None:
        row["speedup_vs_dense"] = dense["seconds"] / row["seconds"]
      print(row, flush=True)
      rows.append(row)
      write_results("diffusion_sweep", rows)
  print(markdown_table([{k: r.get(k, "") for k in ("prompt", "variant", "select", "seconds", "tok_s",
                                                     "speedup_vs_dense", "peak_gib", "compile_s",
                                                     "agreement_with_dense", "error")}
                        for r in rows]))


def main():
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from jaxvlm.generation import diffusion
  from jaxvlm.methods.sparse_dllm import keep_ratio, sparsed
  from jaxvlm.models import from_config
  from pallas_kernels import (block_importance, selection_from_block_mask, sparse_attention,
                              sparse_attention_reference)

  rng = np.random.default_rng(0)
  prompt = rng.integers(0, LLADA_8B["mask_token_id"], (1, PROMPT))
  t_torch = torch_llada_seconds(prompt)

  model = from_config(LLADA_8B, dtype="bfloat16", attention_impl="cudnn")
  graphdef, params = nnx.split(model)
  del model
  sample = dict(steps=STEPS, gen_length=GEN, block_length=BLOCK, mask_id=LLADA_8B["mask_token_id"])
  key = jax.random.key(0)
  dense_fn = diffusion.DensePlan(graphdef)
  run_dense = lambda: diffusion.llada_generate(dense_fn, params, prompt, key, **sample).tokens
  t_dense = median_seconds(run_dense, warmup=1, iters=2)

  importance = rng.gamma(2.0, 1.0, (LLADA_8B["n_layers"], LLADA_8B["n_kv_heads"]))
  keep = keep_ratio.adaptive_keep_ratios(importance, SPARSE["select"], "relative")
  scfg = sparsed.SparseDConfig(steps=STEPS, block_size=SPARSE["block_size"], skip=SPARSE["skip"],
                               gen_start=PROMPT)
  sparse_plan = sparsed.SparseDPlan(graphdef, scfg)
  run_sparse = lambda: diffusion.llada_generate(sparse_plan, params, prompt, key, state=keep,
                                                **sample)
  t_sparse = median_seconds(run_sparse, warmup=1, iters=2)
  out_sparse, out_dense = run_sparse(), run_dense()
  saved = sparsed.attention_flops_saved(out_sparse.state.masks, scfg)
  agree = float(jnp.mean(out_sparse.tokens[:, PROMPT:] == out_dense[:, PROMPT:]))

  # Kernel vs reference on this geometry with a real selection (layer 0's keep ratios).
  ks = jax.random.split(jax.random.key(1), 3)
  shape = (1, PROMPT + GEN, LLADA_8B["n_heads"], 128)
  q, k, v = (jax.random.normal(kk, shape, jnp.bfloat16) for kk in ks)
  masks = sparsed.select_blocks(block_importance(q, k, 128, 128), keep[0],
                                gen_start_block=PROMPT // 128)
  sel = selection_from_block_mask(masks, 128, 128)
  got = sparse_attention(q, k, v, sel).astype(jnp.float32)
  ref = sparse_attention_reference(q.astype(jnp.float32), k.astype(jnp.float32),
                                   v.astype(jnp.float32), sel)
  kernel_rel_err = float(jnp.linalg.norm(got - ref) / jnp.linalg.norm(ref))
  attn_fn = jax.jit(sparse_attention)
  dense_attn = jax.jit(lambda q, k, v: jax.nn.dot_product_attention(q, k, v,
                                                                    implementation="cudnn"))
  t_kernel = median_seconds(lambda: attn_fn(q, k, v, sel))
  t_cudnn = median_seconds(lambda: dense_attn(q, k, v))

  # One forward pass of the model: dense vs sparse with the run's final block masks.
  masks_all = out_sparse.state.masks

  def sparse_attn(q, k, v, mask, layer):
    return sparse_attention(q, k, v, selection_from_block_mask(masks_all[layer], 128, 128))

  fwd = jax.jit(lambda p, x, sparse: nnx.merge(graphdef, p)(
      x, attention_fn=sparse_attn if sparse else None).logits, static_argnums=2)
  tokens = out_dense
  t_fwd = {name: median_seconds(lambda: fwd(params, tokens, flag)) * 1e3
           for name, flag in (("dense", False), ("sparse", True))}

  rows = [
      dict(case="transformers LLaDA loop (anchor)", seconds=t_torch, tok_s=GEN / t_torch,
           speedup_vs_anchor=1.0),
      dict(case="ours dense (cuDNN)", seconds=t_dense, tok_s=GEN / t_dense,
           speedup_vs_anchor=t_torch / t_dense),
      dict(case="ours adaptive sparse (select 0.3, skip 0.2)", seconds=t_sparse,
           tok_s=GEN / t_sparse, speedup_vs_anchor=t_torch / t_sparse),
  ]
  extra = dict(sparse_vs_dense=t_dense / t_sparse, attention=saved, agreement_with_dense=agree,
               kernel_rel_err=kernel_rel_err, layer_attention_ms=dict(
                   sparse_kernel=t_kernel * 1e3, cudnn_dense=t_cudnn * 1e3),
               keep_mean=float(keep.mean()), forward_ms=t_fwd)
  print(markdown_table(rows))
  print(extra)
  print("wrote", write_results("diffusion", rows, extra))


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sweep", help="comma-separated prompt lengths (the sweep instead of the "
                      "4k run against the transformers anchor)")
  parser.add_argument("--variants", default=",".join(VARIANTS),
                      help=f"comma-separated subset of {VARIANTS}")
  parser.add_argument("--select", default=str(SPARSE["select"]),
                      help="comma-separated SparseD select values for the sparse variants")
  args = parser.parse_args()
  if args.sweep:
    variants = args.variants.split(",")
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
      parser.error(f"--variants: {bad} not in {VARIANTS}")
    run_sweep([int(p) for p in args.sweep.split(",")], variants,
              [float(x) for x in args.select.split(",")])
  else:
    main()
