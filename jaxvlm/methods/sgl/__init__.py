"""SGL (seed 002): a small VLM's attention over visual tokens guides a large one's pruning.

* :mod:`.importance` — guide importance (from attention maps, or map-free per layer over only the
  query rows: :func:`visual_importance`), ``int(N * prune_ratio)`` selection via select_tokens.
* :mod:`.pipeline` — shared vision (:func:`shares_vision`), the guide pass with early-exit scores,
  pruned decoding through the KV-cached ``generate`` (:class:`~jaxvlm.models.multimodal.LayerPrune`:
  prefill prunes at layer ``int(L * prune_layer)``, decode runs on the pruned cache).
* :mod:`.settings` — modes, prompts, validation; :mod:`.prompters` — tiny / InternVL2 prompts.
* :mod:`.runner` — resumable runs, per-sample / summary / stats files, case lists.
* :mod:`.stats` — :func:`compare_distributions` (seed 002 §4); :mod:`.hybrid` — hybrid
  checkpoints (``jaxvlm sgl build-hybrid``); :mod:`.guide` — a guide on a frozen shared tower.
"""

from jaxvlm.methods.sgl.guide import frozen_tower_loss, with_vision_tower
from jaxvlm.methods.sgl.hybrid import build_hybrid
from jaxvlm.methods.sgl.importance import (importance_from_attentions, num_kept, prune_layer_index,
                                           select_visual, visual_importance)
from jaxvlm.methods.sgl.pipeline import (answer_score, guide_on_batch, guide_pass, guided_batch,
                                         pruned_generate, shares_vision, single_model_batch)
from jaxvlm.methods.sgl.prompters import InternVL2Prompter, SyntheticPrompter
from jaxvlm.methods.sgl.runner import compare_stats, match_case_list, run_samples
from jaxvlm.methods.sgl.settings import SGLSettings, check_tokenizers
from jaxvlm.methods.sgl.stats import compare_distributions

__all__ = ["InternVL2Prompter", "SGLSettings", "SyntheticPrompter", "answer_score",
           "build_hybrid", "check_tokenizers", "compare_distributions", "compare_stats",
           "frozen_tower_loss", "guide_on_batch", "guide_pass", "guided_batch",
           "importance_from_attentions", "match_case_list", "num_kept", "prune_layer_index", "pruned_generate", "run_samples",
           "select_visual", "shares_vision", "single_model_batch", "visual_importance",
           "with_vision_tower"]
