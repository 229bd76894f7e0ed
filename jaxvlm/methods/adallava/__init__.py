"""AdaLLaVA: latency-budget scheduler over decoder layers and a budget-conditioned vision-token
controller on LLaVA (``modeling``), exact-k Gumbel selection (``gumbel``) and FLOPs (``flops``)."""

from jaxvlm.methods.adallava.gumbel import gumbel_topk, topk_mask
from jaxvlm.methods.adallava.modeling import (AdaCache, AdaConfig, AdaLlava, BudgetInputs,
                                              LatencyEncoder, TokenController, budget_inputs,
                                              check_budget, layer_count, layer_plan,
                                              visual_keep_count)

__all__ = ["AdaCache", "AdaConfig", "AdaLlava", "BudgetInputs", "LatencyEncoder",
           "TokenController", "budget_inputs", "check_budget", "gumbel_topk", "layer_count",
           "layer_plan", "topk_mask", "visual_keep_count"]
