"""GPU benchmark of ``block_importance`` at LLaDA-8B attention shape against cuDNN attention.

Usage: python benchmarks/bench_block_importance.py [S]   (default 32768; B=1, 32/32 heads, d=128,
blocks of 128, bf16). Prints a Markdown table. The anchor is the cuDNN attention forward at the
same shape and masking: its FLOPs (QK and PV) equal ours (QK in each of the two passes), ours has
twice its exponentials. Peak memory (process peak so far) is read from the device after each row.
"""

from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp

from benchmarks.timing import environment, try_per_call_seconds
from pallas_kernels import block_importance


def main(s: int = 32768, h: int = 32, d: int = 128, blk: int = 128):
  ks = jax.random.split(jax.random.key(0), 3)
  q, k, v = (jax.random.normal(kk, (1, s, h, d), jnp.bfloat16) for kk in ks)
  ours = functools.partial(block_importance, block_q=blk, block_k=blk, implementation="triton")
  rows = {
      "cuDNN attention forward (anchor)": (False, lambda q, k: jax.nn.dot_product_attention(
          q, k, v, implementation="cudnn")),
      "cuDNN attention forward, causal": (True, lambda q, k: jax.nn.dot_product_attention(
          q, k, v, is_causal=True, implementation="cudnn")),
      "triton (default: 8 warps, 2 stages)": (False, ours),
      "triton, causal": (True, functools.partial(ours, causal=True)),
  }
  for warps, stages in ((4, 2), (4, 3), (8, 3), (8, 1)):
    rows[f"  triton num_warps={warps} num_stages={stages}"] = (False, functools.partial(
        ours, num_warps=warps, num_stages=stages))
  rows["xla (lax.map over query blocks; last: its peak memory is the largest)"] = (
      False, functools.partial(block_importance, block_q=blk, block_k=blk, implementation="xla"))
  print(environment())
  print(f"\n## block_importance B=1 S={s} H={h} d={d} block {blk} bf16\n")
  print("| variant | ms | vs anchor | TFLOP/s | peak GiB |")
  print("|---|---|---|---|---|")
  anchor = {}  # causal -> the cuDNN time with the same masking
  for name, (causal, fn) in rows.items():
    t, err = try_per_call_seconds(jax.jit(fn), q, k, iters=3, reps=5)
    anchor.setdefault(causal, t)
    flops = 4 * s * s * d * h / (2 if causal else 1)
    peak = (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use", 0) / 2 ** 30
    print(f"| {name} | {t * 1e3:.2f} | {anchor[causal] / t:.2f}x | {flops / t / 1e12:.0f} | "
          f"{peak:.1f} |"
          f"{' ' + err if err else ''}")


if __name__ == "__main__":
  main(int(sys.argv[1]) if len(sys.argv) > 1 else 32768)
