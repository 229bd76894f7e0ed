"""SGL (seed 002): a small VLM's attention over visual tokens guides a large one's pruning.

Pruning inside the large model goes through :class:`jaxvlm.models.multimodal.LayerPrune` (KV-cached
``generate``: prefill prunes at layer ``int(L * prune_layer)``, decode runs on the pruned cache).
"""

from jaxvlm.methods.sgl.stats import compare_distributions

__all__ = ["compare_distributions"]
