"""SGL shared-vision guided pruning (seed 002): a small VLM's attention guides a large one.

``jaxvlm run --config configs/sgl.py:tiny`` runs ``experiments/shared_vision.py``.

Presets:
  tiny:            CPU. Three tiny real-format ``internvl_chat`` folders
                   (:mod:`jaxvlm.models.tiny`: BPE tokenizer with the InternLM2 special tokens,
                   the InternVL2 template, the InternVL2 processor) trained through
                   ``jaxvlm.training.vlm.train_vlm``: the decoder ("8B": 3-layer, 128-wide Qwen2
                   LM), the guide ("2B": 2-layer, 64-wide LM) on the decoder's frozen vision
                   tower (shared vision holds: checked on the weights), and a third model ("1B":
                   1-layer, 64-wide, its own tower) whose LM + projector make the hybrid with the
                   guide's tower (``build_hybrid``), so the hybrid rows test a tower swap.
                   ``select_layer 0`` with pixel shuffle 0.5: each of the 16 visual tokens is one
                   8 px cell of the 4 x 4 scene. The test split holds only ``detail`` questions
                   ("what number is on the red object?": the answer is drawn inside one cell,
                   the other objects carry distractor numbers), TextVQA's situation; training
                   mixes them with colour / shape / position questions. The decoder trains with
                   random visual-token dropout (keep ratio drawn from
                   ``decoder.drop_keep_ratios`` per example, tokens masked from layer 0 at their
                   positions), as a pretrained 8B tolerates missing tokens and a tiny one has to
                   learn it. consistency_token_ratio 0.125 (2 of 16 tokens; the seed's 0.05 of
                   16 is 0); top-4 overlap (top-16 of 16 tokens is always 16).
  internvl2_2b_8b: InternVL2-2B guide + InternVL2-8B decoder on SGL's TextVQA val files
                   (``data/textvqa/textvqa_val.jsonl`` + ``textvqa_val_annotations.json`` under
                   ``data.data_root``), dynamic tiles up to ``data.max_num`` 6 + thumbnail (SGL's
                   ``--dynamic``), SGL's prompt and 10 new tokens, first 50 questions; hybrid =
                   InternVL2-2B vision + InternVL2-1B LM / mlp1. Paths are fields.

``sgl`` holds :class:`jaxvlm.methods.sgl.settings.SGLSettings` (prune_layer 0.0, prune_ratio 0.4,
consistency_token_ratio 0.05, early exit off = 0.0, min_new_tokens 1) and the prompt templates:
  answer_prompt       "{question}" (internvl2_2b_8b: "{question} Answer the question using a
                      single word or phrase.", SGL's ``evaluate_vqa.py`` prompt)
  short_cot_prompt    "{question} Think briefly about where to look, then answer."
  explicit_cot_prompt "{question} Reasoning: describe the relevant region step by step. Answer:"
  rationale_prompt    "{question} Give a short rationale."
  hint_prompt         "{question} Hint: {hint}"            (guide_text_mode=short_rationale)
  cot_prompt          "{question} Let's think step by step."   (reasoning_mode prompt / two_pass)
  two_pass_prompt     "{question} Reasoning: {rationale} Answer:"
``attention_impl`` (folders loaded by path): xla | auto (cuDNN fused attention where the GPU and
shapes allow; the real preset) | cudnn | pallas.
``shared_vision``: auto (shared when the towers are equal, compared on the weights) | force (the
decoder reads the guide tower's features; a warning is logged when the towers differ) | off.
``runs`` picks the tables: hybrid reasoning modes, shared-vision guide modes (at sgl.prune_ratio),
the keep sweep (guide vs random selection, paired 95% intervals), the early-exit threshold row
(against the same keep without exit) and the attention comparison (baseline vs
``compare_mode``).
``data.source``: synthetic | internvl (SGL / InternVL jsonl + annotation json + data root; its
TextVQA and VQAv2 files) | vqa (VQAv2 question / annotation json + image folder) | textvqa
(official TextVQA json + image folder) | jsonl (the cached form); ``data.case_list`` restricts a
run to a case list (matched against the whole dataset and ``data.check_datasets``, before
``data.limit`` applies).
"""

from __future__ import annotations

import dataclasses

import ml_collections

from jaxvlm.methods.sgl import settings as sgl_settings


def _settings(**overrides) -> ml_collections.ConfigDict:
  values = {f.name: f.default for f in dataclasses.fields(sgl_settings.SGLSettings)}
  return ml_collections.ConfigDict({**values, **overrides})


def _lm(width: int, layers: int) -> dict:
  return dict(select_layer=0, llm_config=dict(hidden_size=width, intermediate_size=2 * width,
                                               num_hidden_layers=layers))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "tiny"
  c = ml_collections.ConfigDict()
  c.experiment = "shared_vision"
  c.seed = 0
  c.trust_remote_code = False  # run a checkpoint folder's own tokenizer code (InternLM2 ones)
  c.shared_vision = "auto"
  c.attention_impl = "xla"  # of folders loaded by path; "auto": cuDNN where the GPU takes it
  c.decoder = ml_collections.ConfigDict(dict(
      path="", hf_config=_lm(128, 3), steps=1800, lr=1e-3, batch_size=32,
      drop_keep_ratios="1.0,0.4,0.09"))  # visual-token dropout in training ("" = none)
  c.guide = ml_collections.ConfigDict(dict(path="", hf_config=_lm(64, 2), steps=1800, lr=1e-3,
                                           batch_size=32))
  c.hybrid = ml_collections.ConfigDict(dict(
      vision_path="", lm_path="",  # empty: the guide's tower + the tiny "1B" below
      hf_config=_lm(64, 1), steps=600, lr=1e-3, batch_size=32))
  c.data = ml_collections.ConfigDict(dict(
      source="synthetic", num_train=6000, num_test=256, train_seed=0, test_seed=1,
      image_size=32, grid=4, max_objects=3,
      question_types=("detail", "color", "shape", "position"), test_question_types=("detail",),
      label_seed=0, textvqa_json="", image_dir="", jsonl="", annotations="", questions="",
      data_root="", limit=0, max_num=6, case_list="", dataset="textvqa",
      check_datasets=dict(textvqa="", vqav2="")))
  c.sgl = _settings(consistency_token_ratio=0.125)
  c.runs = ml_collections.ConfigDict(dict(
      hybrid_modes="normal,two_pass,prompt", guide_modes="baseline,short_rationale,short_cot",
      keeps="1.0,0.4,0.09", selections="guide,random", early_exit_keep=0.09,
      early_exit_threshold=0.9, compare_mode="short_cot", top_k=4, batch_size=64))
  if preset == "tiny":
    return c
  if preset == "internvl2_2b_8b":
    c.trust_remote_code = True  # InternVL2-2B / 8B tokenizers are tokenization_internlm2.py
    c.attention_impl = "auto"
    c.decoder.path = "/path/to/InternVL2-8B"
    c.guide.path = "/path/to/InternVL2-2B"
    c.hybrid.update(vision_path="/path/to/InternVL2-2B", lm_path="/path/to/InternVL2-1B")
    c.data.update(source="internvl", jsonl="/path/to/InternVL/data/textvqa/textvqa_val.jsonl",
                  annotations="/path/to/InternVL/data/textvqa/textvqa_val_annotations.json",
                  data_root="/path/to/InternVL", limit=50, max_num=6)
    c.data.check_datasets.update(textvqa="/path/to/InternVL/data/textvqa/textvqa_val.jsonl",
                                 vqav2="/path/to/InternVL/data/vqav2/vqav2_val.jsonl")
    c.sgl = _settings(answer_prompt="{question} Answer the question using a single word or "
                      "phrase.", max_new_tokens=10, guide_max_new_tokens=64)
    c.runs.update(keeps="1.0,0.4,0.09", early_exit_threshold=0.9, early_exit_keep=0.4, top_k=16,
                  batch_size=8)
    return c
  raise KeyError(preset)
