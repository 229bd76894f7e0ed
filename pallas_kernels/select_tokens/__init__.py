"""Exact top-k token selection (indices in original order + gathered features)."""

from pallas_kernels.select_tokens.ops import select_tokens, select_tokens_above
from pallas_kernels.select_tokens.reference import TokenSelection, select_tokens_reference
