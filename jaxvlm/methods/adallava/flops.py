"""FLOPs actually computed per sample by a budgeted LLaMA-family LM (multiply-add = 2 FLOPs).

Per executed layer and query token: q/k/v/o projections ``2 H (2 Hq d + 2 Hkv d)``, SwiGLU
``2 * 3 H I``, attention ``2 * 2 Hq d`` per attended key (causal: the prefill's token ``j`` attends
``j + 1`` keys, decode step ``t`` attends ``P + t``). The LM head (``2 H V``) runs on the last
prefill position and on every decode step. Skipped layers cost nothing; the vision tower is not
counted (it does not depend on the budget). Head granularity: a layer running ``u`` of its
``G = Hkv`` units (KV-head groups) runs ``u Hq / G`` q heads, ``u`` k/v heads and ``u I / G``
intermediate rows, so it costs ``u / G`` of a whole layer.
"""

from __future__ import annotations

from typing import Sequence

from jaxvlm.models.llama.modeling import LlamaConfig


def layer_flops(cfg: LlamaConfig, queries: int, keys_attended: int,
                units: int | None = None) -> int:
  """One decoder layer on ``queries`` tokens attending ``keys_attended`` (query, key) pairs, with
  ``units`` of its ``Hkv`` KV-head groups executed (None: all)."""
  h, d, g = cfg.hidden_size, cfg.head_dim, cfg.num_key_value_heads
  u = g if units is None else units
  hq, inter = cfg.num_attention_heads * u // g, cfg.intermediate_size * u // g
  proj = 2 * h * (2 * hq * d + 2 * u * d)
  mlp = 2 * 3 * h * inter
  return queries * (proj + mlp) + 2 * 2 * hq * d * keys_attended


def flops_per_sample(cfg: LlamaConfig, prompt_len: int, layers_executed: int,
                     num_generated: int, layer_units: Sequence[int] | None = None) -> dict:
  """``{"prefill", "decode": [per step], "total"}`` for one sample.

  ``prompt_len``: valid prompt tokens after pruning (incl. the latency token);
  ``layers_executed``: layers the sample's plan runs whole; ``num_generated``: new tokens (the
  first comes from the prefill, each later one from a decode step); ``layer_units`` (head
  granularity, replaces ``layers_executed``): units executed in each layer (0 = skipped).
  """
  runs = [(layers_executed, None)] if layer_units is None else [(1, int(u)) for u in layer_units]
  layers = lambda q, keys: sum(n * layer_flops(cfg, q, keys, u) for n, u in runs)
  head = 2 * cfg.hidden_size * cfg.vocab_size
  pairs = prompt_len * (prompt_len + 1) // 2
  prefill = layers(prompt_len, pairs) + head
  decode = [layers(1, prompt_len + t) + head for t in range(1, max(num_generated, 1))]
  return {"prefill": prefill, "decode": decode, "total": prefill + sum(decode)}


def batch_flops(cfg: LlamaConfig, prompt_lens: Sequence[int], layers: Sequence[int],
                generated: Sequence[int]) -> list[dict]:
  return [flops_per_sample(cfg, int(p), int(l), int(g))
          for p, l, g in zip(prompt_lens, layers, generated)]
