"""KAVA (seed 003): latent reasoning by distilling a compressed teacher KV cache into PCCoT
latents refined by Jacobi iterations, with the CoT / No-CoT / CODI / PCCoT baselines."""

from jaxvlm.methods.kava.data import (as_cot_record, encode, encode_text, fit_budget,
                                      lengths_needed, prompt_ids, resolve_codi_offset,
                                      special_token_id)
from jaxvlm.methods.kava.inference import evaluate, latent_generate
from jaxvlm.methods.kava.losses import codi_loss, distance, kv_loss, masked_ce
from jaxvlm.methods.kava.method import KavaConfig, kava_loss, make_loss_fn
from jaxvlm.methods.kava.model import (KavaModel, LatentParam, Projection, load_adapter,
                                       save_adapter)
from jaxvlm.methods.kava.passes import student_forward, teacher_forward
from jaxvlm.methods.kava.rkv import pool_group, rkv_scores, select_kv_indices

__all__ = ["KavaConfig", "KavaModel", "LatentParam", "Projection", "as_cot_record", "codi_loss",
           "distance", "encode", "encode_text", "evaluate", "fit_budget", "kava_loss", "kv_loss",
           "latent_generate", "lengths_needed", "load_adapter", "make_loss_fn", "masked_ce",
           "pool_group", "prompt_ids", "resolve_codi_offset", "rkv_scores", "save_adapter", "select_kv_indices",
           "special_token_id", "student_forward", "teacher_forward"]
