"""SGL (seed 002): a small VLM's attention over visual tokens guides a large one's pruning.

* :mod:`.importance` — guide importance (from attention maps, or map-free per layer over only the
  query rows: :func:`visual_importance`), ``int(N_b * prune_ratio)`` selection per row via
  select_tokens (:func:`select_keep`, ragged visual-token counts) and the pruned ``kept_index``
  on device (:func:`kept_positions`).
* :mod:`.pipeline` — shared vision (:func:`shares_vision`), the guide pass with early-exit scores,
  early exit with compaction, pruned decoding through the KV-cached ``generate``
  (:class:`~jaxvlm.models.multimodal.LayerPrune`: prefill prunes at layer
  ``int(L * prune_layer)``, decode runs on the pruned cache), seconds per stage.
* :mod:`.settings` — modes, prompts, validation; :mod:`.prompters` — InternVL2 prompts through
  the folder's processor (dynamic tiles, its template, BOS).
* :mod:`.runner` — resumable runs keyed by their settings, per-sample / summary / stats files,
  case lists.
* :mod:`.stats` — :func:`compare_distributions` (seed 002 §4); :mod:`.hybrid` — hybrid
  checkpoints (``jaxvlm sgl build-hybrid``); :mod:`.guide` — a guide on a frozen shared tower.
"""

from jaxvlm.methods.sgl.guide import frozen_tower_loss, with_vision_tower
from jaxvlm.methods.sgl.hybrid import build_hybrid
from jaxvlm.methods.sgl.importance import (importance_from_attentions, kept_positions, num_kept,
                                           prune_layer_index, select_keep, select_visual,
                                           visual_importance)
from jaxvlm.methods.sgl.pipeline import (answer_logprob, guide_on_batch, guide_pass, guided_batch,
                                         pruned_generate, resolve_shared_vision, shares_vision,
                                         single_model_batch)
from jaxvlm.methods.sgl.prompters import Prompter
from jaxvlm.methods.sgl.runner import compare_stats, match_case_list, run_samples
from jaxvlm.methods.sgl.settings import SGLSettings
from jaxvlm.methods.sgl.stats import compare_distributions

__all__ = ["Prompter", "SGLSettings", "answer_logprob", "build_hybrid", "compare_distributions",
           "compare_stats", "frozen_tower_loss", "guide_on_batch", "guide_pass", "guided_batch",
           "importance_from_attentions", "kept_positions", "match_case_list", "num_kept",
           "prune_layer_index", "pruned_generate", "resolve_shared_vision", "run_samples",
           "select_keep", "select_visual", "shares_vision", "single_model_batch",
           "visual_importance", "with_vision_tower"]
