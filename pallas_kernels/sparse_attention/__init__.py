"""Block-sparse flash attention (splash-style selection) with a pure-JAX reference."""

from pallas_kernels.sparse_attention.ops import sparse_attention
from pallas_kernels.sparse_attention.reference import sparse_attention_reference
from pallas_kernels.sparse_attention.selection import (BlockSelection, blocks_for_ratio,
                                                       dense_selection, selection_from_block_mask,
                                                       selection_from_scores)
