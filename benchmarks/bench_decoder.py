"""Decoder benchmark (lent GPU): Qwen2.5-0.5B-shaped model, random bf16 weights.

* prefill: forward of batch 8 × 2048 tokens (last-position logits), ours vs ``transformers`` (sdpa);
* decode: greedy ``generate`` of batch 16 × 256 new tokens after a 128-token prompt, ours vs
  ``transformers.generate`` (same GPU, same run).

Run: ``PYTHONPATH=. python benchmarks/bench_decoder.py`` (writes $OUT/decoder.json).
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp
import torch
import transformers
from flax import nnx

from benchmarks.timing import markdown_table, median_seconds, torch_sync, write_results
from jaxvlm.generation import generate
from jaxvlm.models import from_config

QWEN25_05B = dict(model_type="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864,
                  num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                  max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6,
                  tie_word_embeddings=True)


def main():
  rows = []
  ours = from_config(QWEN25_05B, dtype="bfloat16", attention_impl="cudnn")
  hf_cfg = transformers.Qwen2Config(**{k: v for k, v in QWEN25_05B.items() if k != "model_type"})
  hf = transformers.Qwen2ForCausalLM._from_config(hf_cfg, attn_implementation="sdpa",
                                                    dtype=torch.bfloat16).cuda().eval()
  rng = np.random.default_rng(0)

  # prefill
  b, s = 8, 2048
  ids = rng.integers(0, QWEN25_05B["vocab_size"], (b, s))
  graphdef, state = nnx.split(ours)
  fwd = jax.jit(lambda st, x: nnx.merge(graphdef, st)(x, logits_to_keep=1).logits)
  ids_j = jnp.asarray(ids, jnp.int32)
  t_ours = median_seconds(lambda: fwd(state, ids_j))
  ids_t = torch.tensor(ids, device="cuda")
  with torch.inference_mode():
    t_hf = median_seconds(lambda: hf(ids_t, logits_to_keep=1).logits, sync=torch_sync)
  rows.append(dict(case=f"prefill B={b} S={s}", ours_ms=t_ours * 1e3, hf_ms=t_hf * 1e3,
                   ours_tok_s=b * s / t_ours, hf_tok_s=b * s / t_hf, speedup=t_hf / t_ours))

  # greedy decode
  b, p, n = 16, 128, 256
  ids = rng.integers(0, QWEN25_05B["vocab_size"], (b, p))
  ids_j, mask_j = jnp.asarray(ids, jnp.int32), jnp.ones((b, p), jnp.int32)
  t_ours = median_seconds(lambda: generate(ours, ids_j, mask_j, n).sequences, warmup=1, iters=3)
  ids_t = torch.tensor(ids, device="cuda")
  with torch.inference_mode():
    t_hf = median_seconds(
        lambda: hf.generate(ids_t, attention_mask=torch.ones_like(ids_t), max_new_tokens=n,
                            min_new_tokens=n, do_sample=False, pad_token_id=0),
        sync=torch_sync, warmup=1, iters=3)
  rows.append(dict(case=f"greedy decode B={b} prompt={p} new={n}", ours_ms=t_ours * 1e3,
                   hf_ms=t_hf * 1e3, ours_tok_s=b * n / t_ours, hf_tok_s=b * n / t_hf,
                   speedup=t_hf / t_ours))
  print(markdown_table(rows))
  print("written", write_results("decoder", rows))


if __name__ == "__main__":
  main()
