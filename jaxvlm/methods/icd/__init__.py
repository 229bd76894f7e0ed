"""In-context demonstration (ICD) selection (seed 000): CLIP embeddings, candidate samplers, the
pointer / Lever-LM policies, InfoScore beam search, supervised -> RCE -> GRPO training and
multi-shot ICL inference with Qwen2.5-VL in Lever-Plus's prompt layout (:mod:`.icl`)."""

from jaxvlm.methods.icd.embed import (FUSIONS, cached_embeddings, encode, fuse, pixels,
                                      tokenize)
from jaxvlm.methods.icd.icl import (LEVER_PLUS_TEMPLATE, PromptFormat, VLMRunner,
                                    answer_prob_fn, answer_token_mask, check_icd_indices,
                                    episode_batch_factory, exact_match, icl_inference,
                                    label_split, predictions_path, reward_fn, write_icl_results)
from jaxvlm.methods.icd.infoscore import beam_search, cached_beam_search
from jaxvlm.methods.icd.losses import (AdaptiveKL, grpo_loss, rce_loss, rce_tau,
                                       supervised_ce)
from jaxvlm.methods.icd.policy import (LeverLMPolicy, PointerPolicy, check_shots, decode,
                                       entropy, make_policy, sequence_logp)
from jaxvlm.methods.icd.samplers import (MixedSampler, RandSampler, SimilaritySampler,
                                         make_sampler)
from jaxvlm.methods.icd.train import GRPO_MODES, Episodes, PolicyTrainer, copy_policy

__all__ = ["AdaptiveKL", "Episodes", "FUSIONS", "GRPO_MODES", "LEVER_PLUS_TEMPLATE",
           "LeverLMPolicy", "MixedSampler", "PointerPolicy", "PolicyTrainer", "PromptFormat",
           "RandSampler", "SimilaritySampler", "VLMRunner", "answer_prob_fn",
           "answer_token_mask", "beam_search", "cached_beam_search", "cached_embeddings",
           "check_icd_indices", "check_shots", "copy_policy", "decode", "encode", "entropy",
           "episode_batch_factory", "exact_match", "fuse", "grpo_loss", "icl_inference",
           "label_split", "make_policy", "make_sampler", "pixels", "predictions_path",
           "rce_loss", "rce_tau", "reward_fn", "sequence_logp", "supervised_ce", "tokenize",
           "write_icl_results"]
