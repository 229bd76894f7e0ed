"""AdaLLaVA: latency-budget scheduler over decoder layers (or heads / MLP rows inside them) and a
token-budget vision-token controller on LLaVA (``modeling``), exact-k Gumbel selection
(``gumbel``), FLOPs (``flops``) and the published checkpoint layout
(``checkpoint``)."""

from jaxvlm.methods.adallava.gumbel import gumbel_topk, topk_mask
from jaxvlm.methods.adallava.modeling import (AdaCache, AdaConfig, AdaLlava, BudgetInputs,
                                              LatencyEncoder, TokenController, UnitCount,
                                              budget_inputs, check_budget, executed_units,
                                              layer_count, layer_plan, unit_counts, unit_plan,
                                              visual_keep_count)

__all__ = ["AdaCache", "AdaConfig", "AdaLlava", "BudgetInputs", "LatencyEncoder",
           "TokenController", "UnitCount", "budget_inputs", "check_budget", "executed_units",
           "gumbel_topk", "layer_count", "layer_plan", "topk_mask", "unit_counts", "unit_plan",
           "visual_keep_count"]
