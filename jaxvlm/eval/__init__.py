"""Evaluation: official VQA accuracy and GSM8K answer extraction / exact match."""

from jaxvlm.eval import gsm8k
from jaxvlm.eval.vqa import normalize_answer, vqa_accuracy

__all__ = ["gsm8k", "normalize_answer", "vqa_accuracy"]
