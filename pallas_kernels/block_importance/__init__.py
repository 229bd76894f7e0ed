"""SparseD tile importance (mean attention probability per tile), flash-style, with a dense
reference that defines its meaning."""

from pallas_kernels.block_importance.ops import block_importance
from pallas_kernels.block_importance.reference import block_importance_reference
