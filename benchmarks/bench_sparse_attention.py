"""GPU benchmark of ``sparse_attention`` against cuDNN attention (same run).

Usage: python benchmarks/bench_sparse_attention.py [OUT_DIR]   (default: $OUT or .)
Prints Markdown tables and writes bench_sparse_attention.json. Times are medians over repeats of
back-to-back calls after warm-up; FLOP rates count only the work the kernel must do.
"""

from __future__ import annotations

import functools
import math
import os
import sys

import jax
import jax.numpy as jnp

from benchmarks.timing import environment, per_call_seconds, try_per_call_seconds
from jaxvlm.io import write_json
from pallas_kernels import blocks_for_ratio, selection_from_scores, sparse_attention


# Per backend, its configurations: Mosaic GPU's are all swept, Triton's tuned at keep 1.0.
TUNING = {
    "mosaic_gpu": [dict(num_stages=2), dict(num_stages=3)],  # 3: dQ and dK/dV rings only
    "triton": [dict(num_warps=8, num_stages=2), dict(num_warps=8, num_stages=3),
               dict(num_warps=4, num_stages=3)],
}


def bench_attention(rows, notes):
  b, s, hq, hkv, d, blk = 1, 8192, 32, 8, 128, 128
  ks = jax.random.split(jax.random.key(0), 5)
  q = jax.random.normal(ks[0], (b, s, hq, d), jnp.bfloat16)
  k = jax.random.normal(ks[1], (b, s, hkv, d), jnp.bfloat16)
  v = jax.random.normal(ks[2], (b, s, hkv, d), jnp.bfloat16)
  w = jax.random.normal(ks[3], q.shape, jnp.bfloat16)
  dense_flops = 4 * b * hq * s * s * d
  nb = s // blk

  def grad_of(fn):
    """dQ, dK, dV of ``sum(fn(q, k, v) * w)`` (``w`` an argument, not a folded constant)."""
    grad = jax.jit(jax.grad(lambda q, k, v, w: jnp.sum(fn(q, k, v).astype(jnp.float32) * w),
                            argnums=(0, 1, 2)))
    return lambda q, k, v: grad(q, k, v, w)

  cudnn = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
  t_cudnn = per_call_seconds(jax.jit(cudnn), q, k, v)
  t_cudnn_bwd = per_call_seconds(grad_of(cudnn), q, k, v)
  rows.append(dict(name="cuDNN dense (anchor)", keep=1.0, fwd=t_cudnn, bwd=t_cudnn_bwd,
                   flops=dense_flops))

  def pallas_flash(q, k, v):
    from jax.experimental.pallas.ops.gpu import attention
    rep = lambda x: jnp.repeat(x, hq // hkv, axis=2)
    return attention.mha(q, rep(k), rep(v), None, sm_scale=d ** -0.5)

  t, err = try_per_call_seconds(jax.jit(pallas_flash), q, k, v)
  t_bwd, _ = try_per_call_seconds(grad_of(pallas_flash), q, k, v)
  rows.append(dict(name="jax Pallas (Triton) flash mha", keep=1.0, fwd=t, bwd=t_bwd,
                   flops=dense_flops))
  notes += [f"jax Pallas mha: {err}"] if err else []

  def tokamax_attn(q, k, v):
    import tokamax
    return tokamax.dot_product_attention(q, k, v, implementation="mosaic")

  t, err = try_per_call_seconds(jax.jit(tokamax_attn), q, k, v)
  rows.append(dict(name="tokamax mosaic (Hopper)", keep=1.0, fwd=t, bwd=float("nan"),
                   flops=dense_flops))
  notes += [f"tokamax: {err}"] if err else []

  scores = jax.random.uniform(ks[4], (1, hkv, nb, nb))
  for impl, configs in TUNING.items():
    if impl != "mosaic_gpu":  # few configs: every one is swept; else tune at keep 1.0
      configs = [tune(impl, configs, q, k, v, scores, blk, notes)]
    for cfg in filter(None, configs):
      for keep in (1.0, 0.5, 0.3, 0.1):
        nsel = int(blocks_for_ratio(keep, nb))
        sel = selection_from_scores(scores, keep, blk, blk, max_blocks=nsel)
        fn = functools.partial(sparse_attention, selection=sel, implementation=impl, **cfg)
        t_fwd = per_call_seconds(jax.jit(fn), q, k, v)
        t_bwd, err = try_per_call_seconds(grad_of(fn), q, k, v, iters=5, reps=5)
        notes += [f"{impl} bwd keep {keep}: {err}"] if err else []
        rows.append(dict(name=f"sparse {impl} {cfg}", keep=keep, fwd=t_fwd, bwd=t_bwd,
                         flops=dense_flops * nsel / nb))


def tune(impl, configs, q, k, v, scores, blk, notes):
  """The config with the fastest dense (keep 1.0) forward, or None if none runs."""
  best = None
  sel = selection_from_scores(scores, 1.0, blk, blk)
  for cfg in configs:
    fn = jax.jit(functools.partial(sparse_attention, selection=sel, implementation=impl, **cfg))
    t, err = try_per_call_seconds(fn, q, k, v)
    notes.append(f"{impl} keep 1.0 {cfg}: {t * 1e3:.3f} ms {err}".rstrip())
    if not math.isnan(t) and (best is None or t < best[0]):
      best = (t, cfg)
  return None if best is None else best[1]


def main(out_dir: str):
  notes = [f"environment: {environment()}"]
  attn_rows = []
  bench_attention(attn_rows, notes)
  anchor = attn_rows[0]
  print("\n## sparse attention  B=1 S=8192 Hq=32 Hkv=8 d=128 bf16 non-causal, blocks 128x128\n")
  print("| kernel | keep | fwd ms | fwd TFLOP/s (work done) | fwd speed-up vs cuDNN | "
        "bwd ms | bwd speed-up vs cuDNN bwd |")
  print("|---|---|---|---|---|---|---|")
  for r in attn_rows:
    print(f"| {r['name']} | {r['keep']} | {r['fwd'] * 1e3:.3f} | "
          f"{r['flops'] / r['fwd'] / 1e12:.0f} | {anchor['fwd'] / r['fwd']:.2f}x | "
          f"{r['bwd'] * 1e3:.3f} | {anchor['bwd'] / r['bwd']:.2f}x |")
  print("\n" + "\n".join(f"- {n}" for n in notes))
  os.makedirs(out_dir, exist_ok=True)
  write_json(os.path.join(out_dir, "bench_sparse_attention.json"),
             dict(attention=attn_rows, notes=notes))


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OUT", "."))
