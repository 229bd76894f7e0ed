"""In-context demonstration (ICD) selection (seed 000): CLIP embeddings, candidate samplers, the
pointer / Lever-LM policies, InfoScore beam search, supervised -> RCE -> GRPO training and
multi-shot ICL inference with a VLM (:mod:`.icl`)."""

from jaxvlm.methods.icd.embed import FUSIONS, cached_embeddings, encode, fuse, tokenize
from jaxvlm.methods.icd.icl import (HFTextTokenizer, answer_logp, answer_prob_fn,
                                    check_icd_indices, episode_batch_factory, icl_inference,
                                    icl_seq_len, label_split, predictions_path, reward_fn,
                                    write_icl_results)
from jaxvlm.methods.icd.infoscore import beam_search, cached_beam_search
from jaxvlm.methods.icd.losses import (AdaptiveKL, grpo_loss, rce_loss, rce_tau,
                                       supervised_ce)
from jaxvlm.methods.icd.policy import (LeverLMPolicy, PointerPolicy, check_shots, decode,
                                       entropy, make_policy, sequence_logp)
from jaxvlm.methods.icd.samplers import (MixedSampler, RandSampler, SimilaritySampler,
                                         make_sampler)
from jaxvlm.methods.icd.train import Episodes, PolicyTrainer

__all__ = ["AdaptiveKL", "Episodes", "FUSIONS", "HFTextTokenizer", "LeverLMPolicy",
           "MixedSampler", "PointerPolicy", "PolicyTrainer", "RandSampler", "SimilaritySampler",
           "answer_logp", "answer_prob_fn", "beam_search", "cached_beam_search",
           "cached_embeddings", "check_icd_indices", "check_shots", "decode", "encode",
           "entropy", "episode_batch_factory", "fuse", "grpo_loss", "icl_inference",
           "icl_seq_len", "label_split", "make_policy", "make_sampler", "predictions_path",
           "rce_loss", "rce_tau", "reward_fn", "sequence_logp", "supervised_ce", "tokenize",
           "write_icl_results"]
