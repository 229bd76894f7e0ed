"""ICD selection (seed 000): two KL_BETA policies, ICL shots 1-4, checkpoint + index comparison.

``jaxvlm run --config configs/icd.py:tiny`` runs ``experiments/kl_beta_compare.py``.

Presets:
  tiny:       CPU. The synthetic ICD task (``jaxvlm.methods.icd.icl``): ``label`` questions whose
              word comes from a per-episode class -> word mapping (5 shape classes, 8 words), so
              only a same-class demonstration reveals the answer. A tiny Qwen2.5-VL is trained on
              ICL episodes (1-4 shots) to copy it (cached in the run folder); the demonstration
              pool, the policy's training queries and the test queries share one unseen mapping.
              Embeddings: a tiny random CLIP (image + question text, ``concat``, centred on the
              pool mean): not semantic, but the question text names the class, so equal classes
              give equal text features.
  qwen25vl3b: Qwen2.5-VL-3B-Instruct on OK-VQA (pool: train2014 questions, test: val2014
              questions), CLIP ViT-L/14 embeddings, 64 RandSampler candidates, beams of 4 shots
              (REFERENCES.md: Lever-LM / Lever-Plus; KL_BETA 0.12 vs 0.15, lr 5e-6).
"""

from __future__ import annotations

import ml_collections

from jaxvlm.sharding import mesh_config


def _vlm() -> ml_collections.ConfigDict:
  """A ``configs/sft.py:vlm_tiny``-style config of the tiny Qwen2.5-VL trained on ICL episodes."""
  return ml_collections.ConfigDict(dict(
      seed=0,
      path="",  # local HF Qwen2.5-VL folder; empty = the tiny one trained here
      model=dict(family="qwen2_5_vl", hf_config=dict(text_config=dict(num_hidden_layers=3)),
                 dtype="float32", param_dtype="float32"),
      data=dict(num_train=2000, train_seed=0, label_seed=0, image_size=32, grid=4,
                max_objects=3, label_by="shape", word_pool=8, max_shots=4, same_class_prob=0.9),
      optimizer=dict(lr=1e-3, schedule="cosine", warmup_steps=50, end_lr_ratio=0.05, b1=0.9,
                     b2=0.98, eps=1e-8, weight_decay=0.01, grad_clip=1.0),
      train=dict(steps=1000, batch_size=32, grad_accum=1, log_every=50, checkpoint_every=200,
                 keep_checkpoints=1),
      mesh=mesh_config()))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "tiny"
  c = ml_collections.ConfigDict()
  c.experiment = "kl_beta_compare"
  c.seed = 0
  c.vlm = _vlm()
  c.data = ml_collections.ConfigDict(dict(
      source="synthetic",  # synthetic | vqa (OK-VQA / VQAv2 json + COCO folders)
      num_pool=300, num_train=160, num_test=200, pool_seed=10, train_seed=11, test_seed=12,
      label_seed=1000,  # the mapping of pool / train / test (never a training episode's seed)
      pool_questions="", pool_annotations="", pool_images="", pool_limit=0,
      test_questions="", test_annotations="", test_images="", test_limit=0,
      max_new_tokens=8))
  c.embedding = ml_collections.ConfigDict(dict(
      clip_path="",  # local HF CLIPModel folder; empty = a tiny random CLIP
      fusion="concat", center=True, batch_size=64, max_len=32,
      tiny=dict(text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, max_position_embeddings=48),
                vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, image_size=32, patch_size=8),
                projection_dim=32)))
  c.sampler = ml_collections.ConfigDict(dict(name="random", num_candidates=16, seed=0,
                                             similar_share=0.5))
  c.infoscore = ml_collections.ConfigDict(dict(shots=2, beam_size=4, batch_size=64))
  c.policy = ml_collections.ConfigDict(dict(name="pointer", dim=256, heads=4, temperature=0.1,
                                            seed=0))
  c.optimizer = ml_collections.ConfigDict(dict(
      lr=1e-3, schedule="constant", warmup_steps=0, b1=0.9, b2=0.999, eps=1e-8,
      weight_decay=0.0, grad_clip=1.0))
  c.train = ml_collections.ConfigDict(dict(
      batch_size=32, supervised_epochs=4, rce_epochs=4, grpo_epochs=6, group_size=4,
      clip=0.2, adv_clip=5.0, adaptive_kl_target=0.0,  # > 0: adaptive KL_BETA (0.01 .. 0.1)
      rce_tau=(2.0, 0.5), sample_temperature=1.0))
  c.compare = ml_collections.ConfigDict(dict(
      kl_betas=(0.12, 0.15), epochs=(3, 6),  # GRPO epoch of policy A / policy B
      shots=(1, 2, 3, 4), index_shots=1, eval_batch_size=64))
  c.mesh = ml_collections.ConfigDict(mesh_config())
  if preset == "tiny":
    return c
  if preset == "qwen25vl3b":
    c.vlm.path = "/path/to/Qwen2.5-VL-3B-Instruct"
    c.vlm.model.update(dtype="bfloat16", param_dtype="bfloat16")
    c.data.update(source="vqa", num_train=5000, num_test=800,
                  pool_questions="/path/to/okvqa/OpenEnded_mscoco_train2014_questions.json",
                  pool_annotations="/path/to/okvqa/mscoco_train2014_annotations.json",
                  pool_images="/path/to/coco/train2014",
                  test_questions="/path/to/okvqa/OpenEnded_mscoco_val2014_questions.json",
                  test_annotations="/path/to/okvqa/mscoco_val2014_annotations.json",
                  test_images="/path/to/coco/val2014", test_limit=800, max_new_tokens=10)
    c.embedding.update(clip_path="/path/to/clip-vit-large-patch14", batch_size=128, max_len=77)
    c.sampler.update(num_candidates=64)
    c.infoscore.update(shots=4, beam_size=5, batch_size=16)
    c.optimizer.update(lr=5e-6)
    c.train.update(batch_size=64, supervised_epochs=10, rce_epochs=5, grpo_epochs=50)
    c.compare.update(epochs=(9, 42), eval_batch_size=16)
    return c
  raise KeyError(preset)
