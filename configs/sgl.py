"""SGL shared-vision guided pruning (seed 002): a small VLM's attention guides a large one.

``jaxvlm run --config configs/sgl.py:tiny`` runs ``experiments/shared_vision.py``.

Presets:
  tiny:            CPU. A tiny ``internvl_chat`` decoder ("8B": 3-layer, 128-wide Qwen2 LM) is
                   trained on the synthetic VQA set, then a tiny guide ("2B": 2-layer, 64-wide
                   LM) on the same data with the decoder's vision tower copied in and frozen
                   (so shared vision applies: checked by comparing the weights). ``select_layer
                   0`` with pixel shuffle 0.5: each of the 16 visual tokens is one 8 px cell of
                   the 4 x 4 scene, so dropping tokens drops image content. The decoder trains
                   with random visual-token dropout (keep ratio drawn from
                   ``decoder.drop_keep_ratios`` per example, tokens masked from layer 0 at their
                   positions): trained on full images only, the 3-layer decoder fell from 0.68 to
                   0.32 at keep 0.4 although the guide's top 6 tokens held every answer cell
                   (a pretrained 8B tolerates missing tokens; the tiny one has to learn it).
                   The hybrid is built by
                   ``build_hybrid`` from the decoder's tower and the guide's LM + projector.
                   Both models are cached in the run folder. consistency_token_ratio 0.125
                   (2 of 16 tokens; the seed's 0.05 of 16 is 0); top-4 overlap (top-16 of 16
                   tokens is always 16).
  internvl2_2b_8b: InternVL2-2B guide + InternVL2-8B decoder on TextVQA val (paths are fields;
                   hybrid = InternVL2-2B vision + InternVL2-1B LM / mlp1), one 448 px tile
                   (``data.max_num``), batch 8.

``sgl`` holds :class:`jaxvlm.methods.sgl.settings.SGLSettings` (prune_layer 0.0, prune_ratio 0.4,
consistency_token_ratio 0.05, early exit off = 0.0) and the prompt templates, defaults:
  answer_prompt       "{question}" (internvl2_2b_8b: + "\\nAnswer the question using a single
                      word or phrase.", the InternVL2 VQA prompt)
  short_cot_prompt    "{question} Think briefly about where to look, then answer."
  explicit_cot_prompt "{question} Reasoning: describe the relevant region step by step. Answer:"
  rationale_prompt    "{question} Give a short rationale."
  hint_prompt         "{question} Hint: {hint}"            (guide_text_mode=short_rationale)
  cot_prompt          "{question} Let's think step by step."   (reasoning_mode prompt / two_pass)
  two_pass_prompt     "{question} Reasoning: {rationale} Answer:"
``runs`` picks the tables: hybrid reasoning modes, shared-vision guide modes (at sgl.prune_ratio),
the keep sweep (guide vs random selection), the early-exit threshold row and the attention
comparison (baseline vs ``compare_mode``).
``data.source``: synthetic | textvqa (official json + image folder) | jsonl (the cached form);
``data.case_list`` restricts a run to a case list, checked against ``data.check_datasets``.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from jaxvlm.methods.sgl import settings as sgl_settings


def _settings(**overrides) -> ml_collections.ConfigDict:
  values = {f.name: f.default for f in dataclasses.fields(sgl_settings.SGLSettings)}
  return ml_collections.ConfigDict({**values, **overrides})


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "tiny"
  c = ml_collections.ConfigDict()
  c.experiment = "shared_vision"
  c.seed = 0
  c.trust_remote_code = False  # run a checkpoint folder's own tokenizer code (InternLM2 ones)
  c.decoder = ml_collections.ConfigDict(dict(
      path="", hf_config=dict(select_layer=0, llm_config=dict(
          hidden_size=128, intermediate_size=256, num_hidden_layers=3)),
      steps=1800, lr=1e-3, batch_size=32,
      drop_keep_ratios="1.0,0.4,0.09"))  # visual-token dropout in training ("" = none)
  c.guide = ml_collections.ConfigDict(dict(
      path="", hf_config=dict(select_layer=0, llm_config=dict(
          hidden_size=64, intermediate_size=128, num_hidden_layers=2)),
      steps=1800, lr=1e-3, batch_size=32))
  c.hybrid = ml_collections.ConfigDict(dict(vision_path="", lm_path=""))  # empty: tiny models
  c.data = ml_collections.ConfigDict(dict(
      source="synthetic", num_train=6000, num_test=256, train_seed=0, test_seed=1,
      image_size=32, grid=4, max_objects=3,
      question_types=("color", "shape", "count", "position"), label_seed=0,
      textvqa_json="", image_dir="", jsonl="", limit=0, max_num=1,
      case_list="", dataset="textvqa", check_datasets=dict(textvqa="", vqav2="")))
  c.sgl = _settings(consistency_token_ratio=0.125)
  c.runs = ml_collections.ConfigDict(dict(
      hybrid_modes="normal,two_pass,prompt", guide_modes="baseline,short_rationale,short_cot",
      keeps="1.0,0.4,0.09", selections="guide,random", early_exit_keep=0.09,
      early_exit_threshold=0.9, compare_mode="short_cot", top_k=4, batch_size=64))
  if preset == "tiny":
    return c
  if preset == "internvl2_2b_8b":
    c.trust_remote_code = True  # InternVL2-2B / 8B tokenizers are tokenization_internlm2.py
    c.decoder.path = "/path/to/InternVL2-8B"
    c.guide.path = "/path/to/InternVL2-2B"
    c.hybrid.update(vision_path="/path/to/InternVL2-2B", lm_path="/path/to/InternVL2-1B")
    c.data.update(source="textvqa", textvqa_json="/path/to/TextVQA_0.5.1_val.json",
                  image_dir="/path/to/textvqa/train_images", limit=50)
    c.data.check_datasets.update(textvqa="/path/to/sgl_textvqa_cache/textvqa_val.jsonl",
                                 vqav2="/path/to/sgl_vqav2_cache/vqav2_val.jsonl")
    c.sgl = _settings(answer_prompt="{question}\nAnswer the question using a single word or "
                      "phrase.", max_new_tokens=16, guide_max_new_tokens=64)
    c.runs.update(keeps="0.4,0.09", early_exit_threshold=0.0, top_k=16, batch_size=8)
    return c
  raise KeyError(preset)
