"""Seed 001: per-head adaptive keep ratios for sparse attention in LLaDA and Dream.

Part 1 reports target vs actual mean keep ratio, heads at the cap, per-layer ranges and the
relative weights for each model geometry, select value and mode (``relative`` = the seed's mode,
``exact_mean``), with heatmaps. Importance is random (``importance_seed``) unless a user's
``[layers, kv_heads]`` .npy/.json file is named per model.

Part 2 (``quality``) trains a tiny LLaDA on a synthetic masked-denoising task (copy the prompt)
and compares dense vs SparseD sampling (modes ``uniform`` / ``relative`` / ``exact_mean``, head
importance calibrated from attention statistics): token agreement and attention FLOPs saved;
the block-wise KV cache samplers (prefix, dual, each also with sparse attention): agreement with
the exact sampler and accuracy.

Presets: ``tiny`` (CI smoke test, < 60 s on CPU), ``default`` (longer training, more prompts).
"""

from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "default"
  c = ml_collections.ConfigDict()
  c.experiment = "adaptive_keep_ratio"
  c.seed = 0
  c.keep = ml_collections.ConfigDict(dict(
      selects=(0.2, 0.3, 0.5, 0.8, 1.0), modes=("relative", "exact_mean"), min_keep=0.01,
      weight_floor=0.3, percentiles=(5.0, 95.0), importance_seed=0,
      heatmap_select=0.3))
  c.models = ml_collections.ConfigDict(dict(
      llada=dict(layers=32, kv_heads=8, importance_path=""),
      dream=dict(layers=28, kv_heads=4, importance_path="")))
  c.quality = ml_collections.ConfigDict(dict(
      enabled=True, prompt_len=16, vocab=16, hidden_size=64, intermediate_size=128,
      num_layers=2, num_heads=4, num_kv_heads=2, train_steps=300, batch_size=32, lr=1e-2,
      num_eval=64, num_calib=16, steps=16, block_length=8, block_size=4, select=0.3, skip=0.2,
      modes=("uniform", "relative", "exact_mean"), cache_modes=("prefix", "dual")))
  if preset == "default":
    c.quality.update(train_steps=600, batch_size=64, num_eval=256)
    return c
  if preset == "tiny":
    c.quality.update(num_eval=32, cache_modes=("dual",))
    return c
  raise KeyError(preset)
