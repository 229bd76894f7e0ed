"""In-context demonstration (ICD) selection (seed 000): CLIP embeddings, candidate samplers, the
pointer / Lever-LM policies, InfoScore beam search, supervised -> RCE -> GRPO training and
multi-shot ICL inference with a VLM (:mod:`.icl`)."""

from jaxvlm.methods.icd.embed import FUSIONS, cached_embeddings, encode, fuse, tokenize
from jaxvlm.methods.icd.infoscore import beam_search, cached_beam_search
from jaxvlm.methods.icd.losses import (AdaptiveKL, grpo_loss, rce_loss, rce_tau,
                                       supervised_ce)
from jaxvlm.methods.icd.policy import (LeverLMPolicy, PointerPolicy, check_shots, decode,
                                       entropy, make_policy, sequence_logp)
from jaxvlm.methods.icd.samplers import (MixedSampler, RandSampler, SimilaritySampler,
                                         make_sampler)
from jaxvlm.methods.icd.train import Episodes, PolicyTrainer

__all__ = ["AdaptiveKL", "Episodes", "FUSIONS", "LeverLMPolicy", "MixedSampler", "PointerPolicy",
           "PolicyTrainer", "RandSampler", "SimilaritySampler", "beam_search",
           "cached_beam_search", "cached_embeddings", "check_shots", "decode", "encode",
           "entropy", "fuse", "grpo_loss", "make_policy", "make_sampler", "rce_loss", "rce_tau",
           "sequence_logp", "supervised_ce", "tokenize"]
