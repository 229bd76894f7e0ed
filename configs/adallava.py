"""AdaLLaVA (seed 004): budget-sampled training and the token-budget sweep (accuracy, FLOPs, time).

``jaxvlm run --config configs/adallava.py:tiny`` runs ``experiments/token_budget_sweep.py``.

Presets:
  tiny:    CPU, ~30 min on a shared 2-core machine. The ``configs/sft.py:vlm_tiny`` LLaVA with
           a 4-layer LM is trained on the synthetic VQA set (cached in ``<workdir>/base``),
           wrapped in AdaLLaVA (latency token, scheduler over layers 1..3 with layer 0 always
           on, token controller over the 16 visual tokens) and fully fine-tuned 1600 steps with
           budgets sampled per batch (``<workdir>/adallava``);
           the sweep evaluates it on held-out questions written as a VQAv2 folder
           (questions / annotations json + images) and read back with ``jaxvlm.data.vqa``.
  llava7b: the LLaVA-1.5-7B shape and real paths as config fields (``model.path``,
           ``data.questions_json`` / ``annotations_json`` / ``image_dir``,
           ``adallava_checkpoint``); see the experiment's docstring for what runs.
"""

from __future__ import annotations

import ml_collections

from jaxvlm.config import load_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "tiny"
  sft = load_config("configs/sft.py:vlm_tiny")
  c = ml_collections.ConfigDict()
  c.experiment = "token_budget_sweep"
  c.seed = 0
  c.model = ml_collections.ConfigDict(sft.model.to_dict())
  c.model.path = ""  # local HF LLaVA folder; empty = the tiny LLaVA trained here
  c.model.hf_config = {"text_config": {"num_hidden_layers": 4}}
  c.model.adallava = ml_collections.ConfigDict(dict(
      latency_token_id=100,  # <vision_start> of the tiny vocabulary: never in a LLaVA prompt
      prefix_layers=1, tau=5.0, latency_features=128, quant_levels=100, controller_hidden=64,
      shared_plan=False,  # True: one layer plan per batch (mean scheduler logits)
      granularity="layer",  # layer | head (KV-head groups + MLP rows inside chosen layers;
      # with shared_plan the chosen units' weight slices are gathered at inference)
      min_budget=0.1,  # lowest budget sampled in training
      trainable="full",  # full | lora | heads
      lora=dict(rank=16, alpha=32.0, dropout=0.0,
                targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                         "down_proj"))))
  c.data = ml_collections.ConfigDict(sft.data.to_dict())
  c.data.update(questions_json="", annotations_json="", image_dir="",  # empty: synthetic split
                limit=0)
  c.base = ml_collections.ConfigDict(dict(train=sft.train.to_dict(),
                                         optimizer=sft.optimizer.to_dict()))
  c.optimizer = ml_collections.ConfigDict(sft.optimizer.to_dict())
  c.optimizer.update(lr=1e-3, warmup_steps=30)
  c.train = ml_collections.ConfigDict(sft.train.to_dict())
  c.train.update(steps=1600, checkpoint_every=400)
  c.sweep = ml_collections.ConfigDict(dict(
      budgets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0), batch_size=64,
      latency_repeats=7))
  c.adallava_checkpoint = ""  # evaluate this AdaLLaVA run folder instead of training one
  c.mesh = ml_collections.ConfigDict(sft.mesh.to_dict())
  if preset == "tiny":
    return c
  if preset == "llava7b":
    c.model.update(path="/path/to/llava-1.5-7b-hf", hf_config={}, dtype="bfloat16")
    c.model.adallava.update(latency_token_id=32002,  # an unused row of the 32064-entry vocab
                            prefix_layers=8, controller_hidden=1024)
    c.data.update(questions_json="/path/to/vqav2/v2_OpenEnded_mscoco_val2014_questions.json",
                  annotations_json="/path/to/vqav2/v2_mscoco_val2014_annotations.json",
                  image_dir="/path/to/coco/val2014", limit=5000, max_new_tokens=16)
    c.adallava_checkpoint = "/path/to/adallava_run"
    c.sweep.update(batch_size=8)
    return c
  raise KeyError(preset)
