"""GPU benchmark of ``select_tokens`` against ``lax.top_k`` + sort + gather (same run).

Usage: python benchmarks/bench_select_tokens.py [OUT_DIR]   (default: $OUT or .)
Prints a Markdown table and writes bench_select_tokens.json. Times are medians over repeats
of back-to-back calls after warm-up. The floor is the fewest bytes the op must move (read the
scores and the kept rows, write the rows and the indices) over the copy bandwidth measured
in the same run. Each full variant's answer is also compared with the anchor's.
"""

from __future__ import annotations

import functools
import os
import sys

import jax
import jax.numpy as jnp

from benchmarks.timing import environment, per_call_seconds, try_per_call_seconds
from jaxvlm.io import write_json
from pallas_kernels import select_tokens
from pallas_kernels.select_tokens import triton
from pallas_kernels.select_tokens.reference import gather_rows


def copy_bandwidth() -> float:
  """Bytes per second of an elementwise copy of 512 MiB (read + write)."""
  x = jax.random.normal(jax.random.key(9), (1 << 28,), jnp.bfloat16)
  return 2 * x.nbytes / per_call_seconds(jax.jit(lambda a: a * 1), x)


# Fused-kernel tunings timed beside the default (rows x d_chunk sets the tile and the grid;
# dense_rows: the index-then-gather variant, whose token pass can take long blocks).
FUSED_SWEEP = (dict(num_warps=4), dict(num_stages=2), dict(num_stages=3), dict(radix_bits=2),
               dict(radix_bits=4), dict(rows=64, d_chunk=256, num_warps=4),
               dict(rows=64, d_chunk=128, num_warps=4), dict(rows=128, d_chunk=128, num_warps=4),
               dict(rows=256, d_chunk=128), dict(rows=256, d_chunk=64, num_warps=4),
               dict(rows=128, d_chunk=512), dict(dense_rows=64, rows=1024),
               dict(dense_rows=32, rows=1024, d_chunk=128, num_warps=4),
               dict(dense_rows=128, rows=512, d_chunk=256), dict(dense_rows=64, rows=4096),
               dict(dense_rows=64, rows=1024, d_chunk=512))


def variants(b, n, kk, scores, feats, interpret: bool = False):
  """Name -> function of (scores, feats): the anchor first, then ours and its sub-kernels."""
  counts = jnp.full((b,), kk, jnp.int32)
  idx = select_tokens(scores, feats, kk, implementation="xla").indices
  ours = functools.partial(select_tokens, k=kk, implementation="triton", interpret=interpret)

  def anchor(scores, feats):
    _, top = jax.lax.top_k(scores, kk)
    top = jnp.sort(top, axis=1)
    return top, jnp.take_along_axis(feats, top[..., None], axis=1)

  out = {
      "lax.top_k + sort + take_along_axis (anchor)": anchor,
      "lax.top_k only": lambda s, f: jax.lax.top_k(s, kk),
      "select_tokens xla (reference)": functools.partial(select_tokens, k=kk,
                                                         implementation="xla"),
      "select_tokens triton (fused, default)": ours,
      "select_tokens triton two kernels": functools.partial(ours, fused=False),
  }
  for tuning in FUSED_SWEEP:
    name = " ".join(f"{key}={value}" for key, value in tuning.items())
    out[f"  fused {name}"] = functools.partial(ours, **tuning)
  narrow = feats[:, :, :8]  # one program per row: the search + token pass latency
  for tuning in (dict(), dict(radix_bits=2), dict(dense_rows=64, rows=1024)):
    name = " ".join(f"{key}={value}" for key, value in tuning.items()) or "default"
    out[f"  fused on 8 feature columns {name}"] = functools.partial(
        lambda s, f, **kw: ours(s, narrow, **kw), **tuning)
  for bits, warps in ((1, 4), (2, 8), (4, 8)):  # the two-kernel path's index kernel alone
    out[f"  indices kernel radix_bits={bits} num_warps={warps}"] = functools.partial(
        lambda s, f, **kw: triton.indices(s, counts, kk, interpret=interpret, **kw),
        radix_bits=bits, num_warps=warps)
  for rows, warps in ((32, 4), (64, 8)):  # its gather kernel alone
    out[f"  gather kernel rows={rows} num_warps={warps}"] = functools.partial(
        lambda s, f, **kw: triton.gather(f, idx, interpret=interpret, **kw), rows=rows,
        num_warps=warps)
  out["  XLA gather (take_along_axis)"] = lambda s, f: gather_rows(f, idx)
  return out


def agrees(result, want) -> str:
  """"yes"/"NO" if ``result`` is a full (indices, features) answer equal to ``want``, else ""."""
  if not (isinstance(result, tuple) and len(result) >= 2
          and getattr(result[1], "shape", None) == want[1].shape):
    return ""
  same = all(bool(jnp.array_equal(got, ref)) for got, ref in zip(result[:2], want))
  return "yes" if same else "NO"


def main(out_dir: str, shape: tuple[int, int, int, int] = (64, 4096, 1024, 1024)):
  """Times ``variants`` on ``shape = (B, N, K, D)``."""
  b, n, kk, d = shape
  ks = jax.random.split(jax.random.key(1), 2)
  scores = jax.random.normal(ks[0], (b, n), jnp.float32)
  feats = jax.random.normal(ks[1], (b, n, d), jnp.bfloat16)
  bandwidth = copy_bandwidth()
  floor = (scores.nbytes + 2 * b * kk * d * 2 + b * kk * 4) / bandwidth
  rows, want = [], None
  for name, fn in variants(b, n, kk, scores, feats).items():
    fn = jax.jit(fn)
    t, err = try_per_call_seconds(fn, scores, feats)
    want = fn(scores, feats) if want is None else want  # the anchor's answer
    rows.append(dict(name=name, time=t, err=err,
                     matches_anchor="" if err else agrees(fn(scores, feats), want)))
  base = rows[0]["time"]
  print(f"\n## select_tokens  B={b} N={n} K={kk} D={d} bf16 features, f32 scores\n")
  print(f"copy bandwidth {bandwidth / 1e12:.2f} TB/s, floor {floor * 1e6:.1f} µs\n")
  print("| variant | µs | speed-up vs anchor | fraction of bandwidth floor | equals anchor |")
  print("|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['name']} | {r['time'] * 1e6:.1f} | {base / r['time']:.2f}x | "
          f"{floor / r['time']:.2f} | {r['matches_anchor']} |"
          f"{' ' + r['err'] if r['err'] else ''}")
  os.makedirs(out_dir, exist_ok=True)
  write_json(os.path.join(out_dir, "bench_select_tokens.json"),
             dict(environment=environment(), bandwidth=bandwidth, floor=floor, rows=rows))


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OUT", "."))
