"""Tiny VLMs trained on the synthetic VQA set: the training path the VLM methods share.

* :func:`tiny_vlm_config` — a small HF config dict for ``llava``, ``internvl_chat`` or
  ``qwen2_5_vl`` over :func:`~jaxvlm.data.vlm_batches.vlm_tokenizer`'s vocabulary; a 32 px image
  gives 16 visual tokens (one per 8 px cell of the default 4 x 4 scene grid) in every family.
  LLaVA's visual tokens are the tower's embeddings (``vision_feature_layer=0``): each holds only
  its own cell, and from random init the tiny model learns to read them more reliably than the
  cell-mixing outputs of the untrained tower layers (which stay in the model for ``-1``/``-2``).
* :func:`build_tiny_vlm` — the random-init model of a ``configs/sft.py:vlm_tiny``-style config.
* :func:`vlm_lm_loss` — the Trainer ``loss_fn``: next-token CE on the answer tokens of a
  :func:`~jaxvlm.data.vlm_batches.build_vlm_batch` batch.
* :func:`vqa_batch_factory` — the default ``batch_fn``: the synthetic train split, pre-encoded.
* :func:`train_tiny_vlm` — trains on :class:`~jaxvlm.training.Trainer` with Orbax checkpoints in
  ``workdir``; when ``workdir`` already holds the final checkpoint it loads it instead (a
  partial run resumes). Methods pass their own ``loss_fn`` / ``batch_fn`` / ``model``.
* :func:`evaluate_vqa` — greedy answers through the one ``generate`` and the official VQA
  accuracy (:func:`jaxvlm.eval.vqa_accuracy`), optionally with ICL demonstrations.
"""

from __future__ import annotations

import dataclasses
import os
from collections import defaultdict
from typing import Any, Callable, Sequence

import jax
import ml_collections
import numpy as np
from flax import nnx

from jaxvlm import models
from jaxvlm.data import sft, synthetic_vqa, vlm_batches
from jaxvlm.data.tokenizer import CharTokenizer
from jaxvlm.errors import ConfigError
from jaxvlm.eval import vqa_accuracy
from jaxvlm.generation import generate
from jaxvlm.sharding import get_rules, make_mesh
from jaxvlm.training.losses import lm_loss_from_logits
from jaxvlm.training.metrics import read_metrics
from jaxvlm.training.trainer import BatchFactory, TrainConfig, Trainer


def _text(vocab: int, **extra) -> dict:
  return dict(vocab_size=vocab, hidden_size=96, intermediate_size=256, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
              rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1,
              eos_token_id=2, pad_token_id=0, **extra)


def tiny_vlm_config(family: str, **overrides) -> dict:
  """HF ``config.json`` dict of a tiny ``family`` VLM. ``overrides`` replace top-level keys;
  a dict value for a sub-config key (``text_config``, ``llm_config``, ``vision_config``) is merged
  into it."""
  tok = vlm_batches.vlm_tokenizer()
  image, start, end = (tok.token_id(t) for t in vlm_batches.VLM_TOKENS)
  vocab = tok.vocab_size
  vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                image_size=32)
  if family == "llava":
    cfg = dict(model_type="llava", architectures=["LlavaForConditionalGeneration"],
               vision_config=dict(vision, model_type="clip_vision_model", patch_size=8,
                                  hidden_act="quick_gelu"),
               text_config=dict(_text(vocab), model_type="llama"), image_token_index=image,
               vision_feature_layer=0, vision_feature_select_strategy="default",
               projector_hidden_act="gelu", tie_word_embeddings=False)
  elif family == "internvl_chat":
    cfg = dict(model_type="internvl_chat", architectures=["InternVLChatModel"],
               vision_config=dict(vision, patch_size=4, qkv_bias=True, qk_normalization=False,
                                  norm_type="layer_norm", layer_norm_eps=1e-6, hidden_act="gelu",
                                  num_channels=3),
               llm_config=dict(_text(vocab), model_type="qwen2",
                               architectures=["Qwen2ForCausalLM"]),
               select_layer=-1, downsample_ratio=0.5, ps_version="v2", template="internlm2-chat",
               img_context_token_id=image)
  elif family == "qwen2_5_vl":
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 4, 4]}
    cfg = dict(model_type="qwen2_5_vl", architectures=["Qwen2_5_VLForConditionalGeneration"],
               text_config=dict(_text(vocab), rope_parameters=rope),
               vision_config=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4,
                                  out_hidden_size=96, patch_size=4, temporal_patch_size=2,
                                  spatial_merge_size=2, window_size=16, fullatt_block_indexes=[1],
                                  in_channels=3, hidden_act="silu"),
               image_token_id=image, video_token_id=vocab,  # no video token in the vocabulary
               vision_start_token_id=start, vision_end_token_id=end, tie_word_embeddings=False)
  else:
    raise ConfigError("family", family, f"one of {vlm_batches.FAMILIES}")
  for key, value in overrides.items():
    cfg[key] = ({**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict)
                else value)
  return cfg


def _plain(x):
  return x.to_dict() if isinstance(x, ml_collections.ConfigDict) else x


def build_tiny_vlm(config: ml_collections.ConfigDict, mesh=None, rules=None):
  """Random-init model of ``config.model.family`` (``config.model.hf_config`` overrides)."""
  m = config.model
  hf = tiny_vlm_config(m.family, **{k: _plain(v) for k, v in m.hf_config.items()})
  return models.from_config(hf, seed=config.seed, dtype=m.dtype, param_dtype=m.param_dtype,
                            mesh=mesh, rules=rules)


def vlm_lm_loss(model, batch: dict, rng: jax.Array) -> tuple[jax.Array, dict]:
  """Next-token cross-entropy on the ``loss_mask`` tokens (the answers) of a VLM batch."""
  del rng
  return lm_loss_from_logits(model(**vlm_batches.model_inputs(model, batch)).logits, batch)


def synthetic_split(data: ml_collections.ConfigDict, num: int, seed: int) -> list:
  """The synthetic VQA split ``config.data`` describes (``num`` samples drawn with ``seed``)."""
  return synthetic_vqa.make_vqa_split(
      num, seed=seed, image_size=data.image_size, grid=data.grid, max_objects=data.max_objects,
      question_types=tuple(data.question_types), label_seed=data.label_seed)


def vqa_batch_factory(config: ml_collections.ConfigDict, tokenizer: CharTokenizer,
                      model) -> BatchFactory:
  """Batches of the synthetic train split (``data.num_train`` samples, ``data.train_seed``),
  encoded once; epoch permutations as in :func:`jaxvlm.data.sft.batch_factory`."""
  train = synthetic_split(config.data, config.data.num_train, config.data.train_seed)
  data = vlm_batches.build_vlm_batch(train, tokenizer, model, seq_len=config.data.seq_len or None)
  return sft.batch_factory(data, config.train.batch_size)


def train_tiny_vlm(config: ml_collections.ConfigDict, workdir: str, *,
                   loss_fn: Callable | None = None,
                   batch_fn: Callable[[Any, CharTokenizer, Any], BatchFactory] | None = None,
                   model=None, trainable: Any = nnx.Param
                   ) -> tuple[Any, CharTokenizer, list[dict]]:
  """(trained model, tokenizer, logged history) for ``config`` (a ``vlm_tiny``-style SFT config).

  ``workdir`` caches the run (``checkpoints/``, ``metrics.jsonl``): a finished run is loaded, a
  partial one resumes. ``loss_fn`` (default :func:`vlm_lm_loss`), ``batch_fn(config, tokenizer,
  model) -> factory`` (default :func:`vqa_batch_factory`) and ``model`` (default
  :func:`build_tiny_vlm`; e.g. a method's wrapped model) replace the defaults; ``trainable`` is
  the Trainer's parameter filter (e.g. LoRA adapters plus a method's heads).
  """
  mesh, rules = make_mesh(config.mesh), get_rules(config.mesh.rules)
  tokenizer = vlm_batches.vlm_tokenizer()
  model = model if model is not None else build_tiny_vlm(config, mesh, rules)
  t = config.train
  trainer = Trainer(
      model, config.optimizer, loss_fn or vlm_lm_loss,
      (batch_fn or vqa_batch_factory)(config, tokenizer, model), mesh,
      config=TrainConfig(steps=t.steps, seed=config.seed, grad_accum=t.grad_accum,
                         log_every=t.log_every, checkpoint_every=t.checkpoint_every,
                         keep_checkpoints=t.keep_checkpoints),
      rules=rules, trainable=trainable, workdir=workdir,
      arch_config={"model": _plain(config.model)}, run_config=config.to_dict())
  history = trainer.train(resume=True)
  if not history:  # loaded a finished run: its history is on disk
    history = read_metrics(os.path.join(workdir, "metrics.jsonl"))
  return trainer.model, tokenizer, history


def _chunks(n: int, size: int):
  return [(s, min(s + size, n)) for s in range(0, n, size)]


def evaluate_vqa(model, tokenizer: CharTokenizer, samples: Sequence[Any], *,
                 shots: Sequence[Sequence[Any]] | None = None, batch_size: int = 64,
                 max_new_tokens: int = 16) -> dict:
  """Greedy answers (left-padded prompts of one length, batches padded to ``batch_size`` so one
  compilation serves all) and VQA accuracy: ``accuracy`` (official, mean over samples),
  ``exact_match`` (prediction == majority answer), ``per_type`` accuracy, ``predictions``."""
  fmt = vlm_batches.VLMPromptFormat.from_model(model, tokenizer,
                                               vlm_batches.image_of(samples[0]).shape[0])
  shots = list(shots) if shots is not None else [()] * len(samples)
  length = max(len(vlm_batches.encode_prompt(fmt, tokenizer, s, d)[0])
               for s, d in zip(samples, shots))
  predictions = []
  for start, stop in _chunks(len(samples), batch_size):
    idx = list(range(start, stop)) + [stop - 1] * (batch_size - (stop - start))
    batch = vlm_batches.build_vlm_batch([samples[i] for i in idx], tokenizer, model,
                                        seq_len=length, shots=[shots[i] for i in idx],
                                        with_answer=False, fmt=fmt)
    out = generate(model, batch["input_ids"], batch["attention_mask"], max_new_tokens,
                   temperature=0.0, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id,
                   **vlm_batches.generation_inputs(model, batch))
    new = np.asarray(out.new_tokens)[:stop - start]
    predictions += [tokenizer.decode(row).strip() for row in new]
  scores = [vqa_accuracy(p, s.answers) for p, s in zip(predictions, samples)]
  by_type = defaultdict(list)
  for score, s in zip(scores, samples):
    by_type[s.question_type].append(score)
  return {"accuracy": float(np.mean(scores)),
          "exact_match": float(np.mean([p == s.answer for p, s in zip(predictions, samples)])),
          "per_type": {k: float(np.mean(v)) for k, v in sorted(by_type.items())},
          "predictions": predictions}


def blank_images(samples: Sequence[Any]) -> list:
  """Copies of synthetic ``samples`` whose images show only the background (an image-blind
  reference: accuracy above it comes from reading the image)."""
  out = []
  for s in samples:
    image = np.empty_like(s.image)
    image[:] = synthetic_vqa.BACKGROUND
    out.append(dataclasses.replace(s, image=image))
  return out


__all__ = ["blank_images", "build_tiny_vlm", "evaluate_vqa", "synthetic_split", "tiny_vlm_config",
           "train_tiny_vlm", "vlm_lm_loss", "vqa_batch_factory"]
