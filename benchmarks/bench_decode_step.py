"""Per-token cost of ``generate``'s decode loop (lent GPU) against the weight-read bound.

The SGL decoder's language model (InternLM2.5-7B shape, random bf16 weights, cuDNN attention),
batch 8, a 256-token prompt. For each loop variant, ``generate`` runs 1 and 17 new tokens; the
difference / 16 is the marginal time of one decode step, compared with reading every weight once
at the card's bandwidth (``--bandwidth``, H200: 4.8 TB/s). Variants:

* ``fixed``: no EOS ids, so the step count is static (no loop condition is read);
* ``eos, test every k``: an EOS id that never occurs, ``stop_check_every=k`` (k = 1 was the only
  behaviour before the option: one device-to-host read of the loop condition per step).

``--profile DIR`` also writes a ``jax.profiler`` trace of one 17-token run per variant and prints
its kernel time, the device's busy share over the run and the costliest kernels.
GPU: ``PYTHONPATH=. python benchmarks/bench_decode_step.py --profile $OUT/trace`` (writes
``$OUT/decode_step.json``). CPU smoke run: ``--tiny``.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import jax
import numpy as np

from benchmarks.timing import markdown_table, median_seconds, trace_summary, write_results
from jaxvlm import frozen, models
from jaxvlm.generation import generate

INTERNLM2_1_8B = dict(model_type="internlm2", architectures=["InternLM2ForCausalLM"],
                      vocab_size=92553, hidden_size=2048, intermediate_size=8192,
                      num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=8,
                      rope_theta=1e6, max_position_embeddings=32768, rms_norm_eps=1e-5,
                      bias=False, tie_word_embeddings=False)
INTERNLM2_5_7B = dict(INTERNLM2_1_8B, hidden_size=4096, intermediate_size=14336,
                      num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8)
FULL = dict(model=INTERNLM2_5_7B, batch=8, prompt=256, new=17, dtype="bfloat16",
            attention="cudnn", warmup=2, iters=7, checks=(1, 4))
TINY = dict(model=dict(INTERNLM2_5_7B, vocab_size=128, hidden_size=64, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
            batch=2, prompt=8, new=5, dtype="float32", attention="xla", warmup=1, iters=2,
            checks=(1, 4))


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tiny", action="store_true", help="CPU smoke run with tiny shapes")
  parser.add_argument("--profile", type=pathlib.Path, help="write jax.profiler traces here")
  parser.add_argument("--bandwidth", type=float, default=4.8e12, help="bytes/s (H200: 4.8e12)")
  args = parser.parse_args(argv)
  s = TINY if args.tiny else FULL
  model = models.from_config(s["model"], dtype=s["dtype"], param_dtype=s["dtype"],
                             attention_impl=s["attention"])
  vocab = s["model"]["vocab_size"]
  ids = np.random.default_rng(0).integers(3, vocab - 1, (s["batch"], s["prompt"])).astype(np.int32)
  variants = {"fixed": dict(eos_token_id=())}
  variants.update({f"eos, test every {k}": dict(eos_token_id=vocab - 1, stop_check_every=k)
                   for k in s["checks"]})
  run = lambda new, kw: generate(model, ids, None, new, temperature=0.0, pad_token_id=0,
                                 **kw).sequences
  weight_bytes = sum(x.nbytes for x in jax.tree.leaves(frozen.split(model)[1]))
  bound_ms = 1e3 * weight_bytes / args.bandwidth
  rows, traces = [], {}
  with frozen.freeze(model):
    one = median_seconds(lambda: run(1, variants["fixed"]), warmup=s["warmup"], iters=s["iters"])
    for label, kw in variants.items():
      t = median_seconds(lambda: run(s["new"], kw), warmup=s["warmup"], iters=s["iters"])
      step_ms = 1e3 * (t - one) / (s["new"] - 1)
      rows.append(dict(variant=label, new_tokens=s["new"], ms=1e3 * t, prefill_ms=1e3 * one,
                       ms_per_step=step_ms, weight_read_bound_ms=bound_ms,
                       step_vs_bound=step_ms / bound_ms))
      if args.profile:
        log_dir = args.profile / label.replace(" ", "_").replace(",", "")
        with jax.profiler.trace(str(log_dir)):
          jax.block_until_ready(run(s["new"], kw))
        traces[label] = trace_summary(log_dir)
  print(markdown_table(rows))
  for label, summary in traces.items():
    print(label, json.dumps(summary, indent=1))
  info = {"weight_gb": weight_bytes / 1e9, "traces": traces, "shape": {
      k: v for k, v in s.items() if k != "model"}}
  print("written", write_results("decode_step", rows, info))
  return {"rows": rows, **info}


if __name__ == "__main__":
  main()
