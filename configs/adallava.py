"""AdaLLaVA (seed 004): budget-sampled training and the latency / token budget sweeps.

``jaxvlm run --config configs/adallava.py:tiny`` runs ``experiments/token_budget_sweep.py``.

Presets:
  tiny:    CPU. A tiny real-format LLaVA folder (``model.family`` llava, 4-layer LM, 16 visual
           tokens per 32 px image, BPE tokenizer with the LLaVA-1.5 template) is trained on the
           synthetic VQA scenes written as a LLaVA instruction json (``<workdir>/data``), wrapped
           in AdaLLaVA (latency token, scheduler over layers 1..3 with layer 0 always on, token
           controller over the 16 visual tokens) and fully fine-tuned with a latency budget and a
           token budget sampled per batch. The sweeps evaluate it on held-out questions written
           as a VQAv2 folder (questions / annotations json + images) and read back.
  llava7b: a LLaVA-1.5-7B HF folder (``model.path``), its instruction json
           (``data.instruct_json`` / ``data.instruct_images``) and VQAv2 files
           (``data.questions_json`` / ``annotations_json`` / ``image_dir``); no base training
           (the folder is the base), AdaLLaVA fine-tuned from it, or imported from a published
           AdaLLaVA folder (``adallava_published``).
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
  c.model.path = ""  # HF LLaVA folder; empty = the tiny real-format LLaVA folder trained here
  c.model.hf_config = {"text_config": {"num_hidden_layers": 4}}  # tiny folder overrides only
  c.model.adallava = ml_collections.ConfigDict(dict(
      latency_token_id=0,  # <unk> of the tiny tokenizer: never produced for text
      prefix_layers=1, tau=5.0, latency_features=128, quant_levels=100, controller_hidden=64,
      shared_plan=True,  # inference: one plan per batch (False: the union of per-row plans)
      granularity="layer",  # layer | head (KV-head groups + MLP rows inside chosen layers;
      # with shared_plan the chosen units' weight slices are gathered at inference)
      min_budget=0.1,  # lowest latency budget sampled in training
      min_token_budget=0.1,  # lowest token budget sampled in training
      trainable="full",  # full | lora | heads
      lora=dict(rank=16, alpha=32.0, dropout=0.0,
                targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                         "down_proj"))))
  c.data = ml_collections.ConfigDict(sft.data.to_dict())
  c.data.update(instruct_json="", instruct_images="",  # empty: the synthetic train split
                instruct_limit=0,
                questions_json="", annotations_json="", image_dir="",  # empty: synthetic test
                limit=0)
  c.base = ml_collections.ConfigDict(dict(train=sft.train.to_dict(),
                                         optimizer=sft.optimizer.to_dict()))
  c.optimizer = ml_collections.ConfigDict(sft.optimizer.to_dict())
  c.optimizer.update(lr=1e-3, warmup_steps=30)
  c.train = ml_collections.ConfigDict(sft.train.to_dict())
  c.train.update(steps=1600, checkpoint_every=400)
  c.sweep = ml_collections.ConfigDict(dict(
      token_budgets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),  # at latency_fixed
      latency_budgets=(0.25, 0.5, 0.75, 1.0),  # at token_fixed
      latency_fixed=1.0, token_fixed=1.0,
      grid=False,  # also every (latency, token) pair of the two axes
      batch_size=64, latency_repeats=7))
  c.adallava_published = ""  # a published AdaLLaVA folder to import instead of fine-tuning
  c.mesh = ml_collections.ConfigDict(sft.mesh.to_dict())
  if preset == "tiny":
    return c
  if preset == "llava7b":
    c.model.path = "/path/to/llava-1.5-7b-hf"
    c.model.hf_config = ml_collections.ConfigDict()  # a real folder: no tiny overrides
    c.model.dtype = c.model.param_dtype = "bfloat16"  # bf16 weights, as published
    c.model.adallava.update(latency_token_id=32002,  # an unused row of the 32064-entry vocab
                            prefix_layers=16, controller_hidden=1024)
    c.data.update(instruct_json="/path/to/llava_v1_5_mix665k.json",
                  instruct_images="/path/to/LLaVA-Finetune/images",
                  questions_json="/path/to/vqav2/v2_OpenEnded_mscoco_val2014_questions.json",
                  annotations_json="/path/to/vqav2/v2_mscoco_val2014_annotations.json",
                  image_dir="/path/to/coco/val2014", limit=5000, max_new_tokens=16)
    c.train.update(batch_size=8, steps=1000, checkpoint_every=200)
    c.sweep.update(batch_size=8, latency_repeats=3)
    return c
  raise KeyError(preset)
