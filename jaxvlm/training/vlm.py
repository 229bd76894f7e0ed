"""Training a VLM from a folder: the training path the VLM methods (ICD, SGL, AdaLLaVA) share.

The model always comes from a Hugging Face folder through :func:`jaxvlm.models.chat.load_vlm`
and its batches through :func:`jaxvlm.data.vlm_inputs.encode`, for tiny and real checkpoints
alike. ``config.model.path`` names the folder; empty means the tiny preset: a random-init
real-format folder (:func:`jaxvlm.models.tiny.write_tiny_vlm_folder`) is written first, its
tokenizer trained on the synthetic split's texts.

* :func:`vlm_lm_loss` — the Trainer ``loss_fn``: next-token CE on the ``loss_mask`` tokens.
* :func:`encode_examples` — answer-masked training rows (``vlm_inputs.as_rows`` layout).
* :func:`vqa_batch_factory` — the default ``batch_fn``: the synthetic train split, pre-encoded.
* :func:`train_vlm` — trains on :class:`~jaxvlm.training.Trainer` with Orbax checkpoints in
  ``workdir`` and saves the result as an HF folder ``workdir/model`` (written whole, then
  renamed); when that folder exists it is loaded instead, and a partial run resumes.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Any, Callable, Sequence

import jax
import ml_collections
from flax import nnx

from jaxvlm import models
from jaxvlm.data import sft, synthetic_vqa, vlm_inputs
from jaxvlm.eval.vqa_answers import vqa_conversation
from jaxvlm.models import tiny
from jaxvlm.models.chat import load_vlm
from jaxvlm.sharding import get_rules, make_mesh
from jaxvlm.training.losses import lm_loss_from_logits
from jaxvlm.training.metrics import read_metrics
from jaxvlm.training.trainer import BatchFactory, TrainConfig, Trainer

# Files of a VLM folder other than its config and weights (tokenizer, processor, template).
_PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json",
                    "chat_template.jinja", "chat_template.json", "processor_config.json",
                    "preprocessor_config.json", "generation_config.json")


@dataclasses.dataclass
class TrainedVLM:
  model: Any  # the trained module (the wrapped one when ``wrap`` was given)
  processor: Any
  history: list[dict]
  folder: str  # the trained model as an HF folder


def _plain(x):
  return x.to_dict() if isinstance(x, ml_collections.ConfigDict) else x


def synthetic_split(data: ml_collections.ConfigDict, num: int, seed: int) -> list:
  """The synthetic VQA split ``config.data`` describes (``num`` samples drawn with ``seed``)."""
  return synthetic_vqa.make_vqa_split(
      num, seed=seed, image_size=data.image_size, grid=data.grid, max_objects=data.max_objects,
      question_types=tuple(data.question_types), label_seed=data.label_seed)


def tokenizer_texts(samples: Sequence[Any]) -> list[str]:
  """The texts a tiny tokenizer is trained on: every question and answer of ``samples``."""
  return [t for s in samples for t in (s.question, *s.answers)]


def tiny_folder(config: ml_collections.ConfigDict, folder: str, texts: Sequence[str]) -> str:
  """The random-init tiny folder of ``config.model`` (``family``, ``hf_config`` overrides, the
  run ``seed``) at ``config.data.image_size``; written once (whole, then renamed)."""
  if os.path.exists(os.path.join(folder, "config.json")):
    return folder
  m = config.model
  partial = folder + ".partial"
  shutil.rmtree(partial, ignore_errors=True)
  tiny.write_tiny_vlm_folder(m.family, partial, texts, seed=config.seed,
                             image_size=config.data.image_size,
                             **{k: _plain(v) for k, v in m.hf_config.items()})
  os.replace(partial, folder)
  return folder


def source_folder(config: ml_collections.ConfigDict, workdir: str) -> str:
  """``config.model.path``, or the tiny folder ``workdir/init`` (its tokenizer trained on the
  synthetic train split)."""
  if config.model.path:
    return config.model.path
  train = synthetic_split(config.data, config.data.num_train, config.data.train_seed)
  return tiny_folder(config, os.path.join(workdir, "init"), tokenizer_texts(train))


def vlm_lm_loss(model, batch: dict, rng: jax.Array) -> tuple[jax.Array, dict]:
  """Next-token cross-entropy on the ``loss_mask`` tokens (the answers) of a VLM batch."""
  del rng
  return lm_loss_from_logits(model(**vlm_inputs.model_kwargs(model, batch)).logits, batch)


def merge_size(processor) -> int:
  """The processor's spatial merge (Qwen2.5-VL: 2; 1 for the families that have none)."""
  return getattr(getattr(processor, "image_processor", None), "merge_size", 1)


def encode_examples(processor, samples: Sequence[Any], *,
                    shots: Sequence[Sequence[Any]] | None = None,
                    conversation: Callable[..., list[dict]] = vqa_conversation
                    ) -> dict[str, Any]:
  """Answer-masked rows of ``samples`` (``conversation(sample, shots)`` prompts, the sample's
  majority ``answer`` as the assistant turn) in the ``Trainer`` layout."""
  shots = list(shots) if shots is not None else [()] * len(samples)
  batch = vlm_inputs.encode(processor, [conversation(s, d) for s, d in zip(samples, shots)],
                            answers=[s.answer for s in samples])
  return vlm_inputs.as_rows(batch, merge_size(processor))


def vqa_batch_factory(config: ml_collections.ConfigDict, processor, model) -> BatchFactory:
  """Batches of the synthetic train split (``data.num_train`` samples, ``data.train_seed``),
  encoded once; epoch permutations as in :func:`jaxvlm.data.sft.batch_factory`."""
  del model
  train = synthetic_split(config.data, config.data.num_train, config.data.train_seed)
  return sft.batch_factory(encode_examples(processor, train), config.train.batch_size)


def save_vlm(model, processor_folder: str, folder: str) -> str:
  """``model``'s weights + config and ``processor_folder``'s tokenizer / processor files as an
  HF folder, written whole under a temporary name, then renamed to ``folder``."""
  partial = folder + ".partial"
  shutil.rmtree(partial, ignore_errors=True)
  models.save_pretrained(model, partial,
                         source_config=models.read_config(processor_folder))
  for name in _PROCESSOR_FILES:
    src = os.path.join(processor_folder, name)
    if os.path.exists(src):
      shutil.copy(src, os.path.join(partial, name))
  shutil.rmtree(folder, ignore_errors=True)
  os.replace(partial, folder)
  return folder


def load_model(config: ml_collections.ConfigDict, folder: str, mesh=None, rules=None):
  """(model, processor) of ``folder`` at ``config.model``'s dtypes."""
  m = config.model
  return load_vlm(folder, dtype=m.dtype, param_dtype=m.param_dtype, mesh=mesh, rules=rules)


def train_vlm(config: ml_collections.ConfigDict, workdir: str, *,
              loss_fn: Callable | None = None,
              batch_fn: Callable[[Any, Any, Any], BatchFactory] | None = None,
              wrap: Callable[[Any], Any] | None = None, unwrap: Callable[[Any], Any] | None = None,
              trainable: Any = nnx.Param) -> TrainedVLM:
  """Trains the VLM of ``config`` (a ``configs/sft.py:vlm_tiny``-style config) in ``workdir``.

  ``workdir/model`` holds the result as an HF folder; when it exists (and nothing is wrapped)
  it is loaded. The Trainer checkpoints in ``workdir``: a partial run resumes, a finished one
  is restored (a wrapped module's own parameters come from there). ``loss_fn`` (default
  :func:`vlm_lm_loss`) and ``batch_fn(config, processor, model) -> factory`` (default
  :func:`vqa_batch_factory`) replace the defaults; ``wrap(model)`` gives the module to train
  (e.g. a method's model around the VLM) and ``unwrap(trained)`` the VLM to save; ``trainable``
  is the Trainer's parameter filter.
  """
  out = os.path.join(workdir, "model")
  if wrap is None and os.path.exists(os.path.join(out, "config.json")):
    model, processor = load_model(config, out)
    return TrainedVLM(model, processor, read_metrics(os.path.join(workdir, "metrics.jsonl")),
                      out)
  mesh, rules = make_mesh(config.mesh), get_rules(config.mesh.rules)
  source = source_folder(config, workdir)
  model, processor = load_model(config, source, mesh, rules)
  module = wrap(model) if wrap else model
  t = config.train
  trainer = Trainer(
      module, config.optimizer, loss_fn or vlm_lm_loss,
      (batch_fn or vqa_batch_factory)(config, processor, module), mesh,
      config=TrainConfig(steps=t.steps, seed=config.seed, grad_accum=t.grad_accum,
                         log_every=t.log_every, checkpoint_every=t.checkpoint_every,
                         keep_checkpoints=t.keep_checkpoints),
      rules=rules, trainable=trainable, workdir=workdir,
      arch_config={"model": _plain(config.model)}, run_config=config.to_dict())
  history = trainer.train(resume=True) or read_metrics(os.path.join(workdir, "metrics.jsonl"))
  if not os.path.exists(os.path.join(out, "config.json")):
    save_vlm(unwrap(trainer.model) if unwrap else trainer.model, source, out)
  return TrainedVLM(trainer.model, processor, history, out)


__all__ = ["TrainedVLM", "encode_examples", "load_model", "merge_size", "save_vlm",
           "source_folder", "synthetic_split", "tiny_folder", "tokenizer_texts", "train_vlm",
           "vlm_lm_loss", "vqa_batch_factory"]
