"""Static description of one sparse-attention call, shared by the backends."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class AttentionSpec:
  """Shapes and options fixed at trace time. Sequence lengths are the unpadded ones."""
  block_q: int
  block_k: int
  seq_q: int
  seq_k: int
  num_q_heads: int
  num_kv_heads: int
  num_sel_heads: int
  sel_batch: int
  causal: bool
  segments: bool
  scale: float
  interpret: bool = False
  num_warps: int = 8  # GPU (Triton) only
  num_stages: int = 2  # GPU only: Triton pipeline depth, Mosaic GPU K/V buffers

  @property
  def kv_group(self) -> int:
    """Query heads per KV head."""
    return self.num_q_heads // self.num_kv_heads

  @property
  def sel_group(self) -> int:
    """Query heads per selection head."""
    return self.num_q_heads // self.num_sel_heads

  @property
  def kv_len(self) -> int | None:
    """The true key length when the last key block holds padding, else None."""
    return None if self.seq_k % self.block_k == 0 else self.seq_k
