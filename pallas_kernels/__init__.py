"""Pallas kernels: block-sparse attention, tile importance and token selection, each with a
pure-JAX reference. The package imports nothing from jaxvlm (its errors: ``pallas_kernels.errors``).

Every op takes ``implementation=None | "mosaic_tpu" | "mosaic_gpu" | "triton" | "xla"`` (None: by
platform; ``mosaic_gpu`` is sparse attention's Hopper kernel);
see ``pallas_kernels.backend``.
"""

from pallas_kernels.block_importance import block_importance, block_importance_reference
from pallas_kernels.select_tokens import (TokenSelection, select_tokens, select_tokens_above,
                                          select_tokens_reference)
from pallas_kernels.sparse_attention import (BlockSelection, blocks_for_ratio, dense_selection,
                                             selection_from_block_mask, selection_from_scores,
                                             sparse_attention, sparse_attention_reference)
