"""ICD selection (seed 000): two KL_BETA policies, ICL shots 1-4, checkpoint + index comparison.

``jaxvlm run --config configs/icd.py:tiny`` runs ``experiments/kl_beta_compare.py``.

Presets:
  tiny:       CPU. The synthetic ICD task (``jaxvlm.methods.icd.icl``): ``label`` questions whose
              word comes from a per-episode class -> word mapping (5 shape classes, 8 words), so
              only a same-class demonstration reveals the answer. A tiny real-format Qwen2.5-VL
              folder is trained on ICL episodes (1-4 shots) in Lever-Plus's prompt layout to copy
              it (cached); the demonstration pool, the policy's training queries and the test
              queries share one unseen mapping. Embeddings: a tiny random CLIP (image + question
              text, ``concat``, centred on the pool mean): not semantic, but the question text
              names the class, so equal classes give equal text features.
  qwen25vl3b: Qwen2.5-VL-3B-Instruct on OK-VQA (pool: train2014 questions, test: val2014
              questions, 800), CLIP ViT-L/14 embeddings (not centred), 64 RandSampler
              candidates, InfoScore beams of 4 shots x 5, the Lever-Plus system prompt; static
              query pointer policy (V2/V3), lr 1e-4 / 1e-5 / 5e-6 for supervised / RCE / GRPO,
              offline GRPO on the beams, KL_BETA 0.12 vs 0.15, epochs chosen by validation loss.
              The paths are fields (``--config.vlm.model.path``, ``--config.data.*``,
              ``--config.embedding.clip_path``).
"""

from __future__ import annotations

import ml_collections

from jaxvlm.sharding import mesh_config

# Lever-Plus configs/infer_model/qwen2.5_vl_3B.yaml: vqa_prompt_template and system_prompt.
TEMPLATE = "Question:{question} Short answer:{answer}"
LEVER_PLUS_SYSTEM = (
    "In the upcoming task, you will see four sets of dialogues, each containing two roles: user "
    "and assistant. The user is the questioner, who provides an image and asks a question based "
    "on it; the assistant is the responder, who answers according to the image and question "
    "provided by the user. Afterward, you will receive an image and a question from the user. "
    "Please act as the assistant and answer based on the four previous dialogue sets and your "
    "own knowledge. Strictly follow the answering format: if the examples use only one or two "
    "keywords, your reply must also use only one or two keywords; if the examples contain no "
    "more than three tokens, your reply must not exceed three tokens either.")


def _vlm() -> ml_collections.ConfigDict:
  """A ``configs/sft.py:vlm_tiny``-style config of the tiny Qwen2.5-VL trained on ICL episodes
  (``model.path`` empty) or of the VLM folder ``model.path``."""
  return ml_collections.ConfigDict(dict(
      seed=0,
      model=dict(path="", family="qwen2_5_vl",
                 hf_config=dict(text_config=dict(num_hidden_layers=3)),
                 dtype="float32", param_dtype="float32"),
      data=dict(num_train=2000, train_seed=0, label_seed=0, image_size=32, grid=4,
                max_objects=3, label_by="shape", word_pool=8, max_shots=4, same_class_prob=0.9,
                question_types=("label",)),
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
  c.prompt = ml_collections.ConfigDict(dict(template=TEMPLATE, system=""))
  c.data = ml_collections.ConfigDict(dict(
      source="synthetic",  # synthetic | vqa (OK-VQA / VQAv2 json + COCO folders)
      num_pool=300, num_train=160, num_test=200, pool_seed=10, train_seed=11, test_seed=12,
      label_seed=1000,  # the mapping of pool / train / test (never a training episode's seed)
      pool_questions="", pool_annotations="", pool_images="", pool_limit=0,
      test_questions="", test_annotations="", test_images="", test_limit=0,
      val_share=0.2,  # last share of the training queries: validation losses only
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
  c.runner = ml_collections.ConfigDict(dict(pad_to=64, feature_bucket=256))
  c.policy = ml_collections.ConfigDict(dict(name="pointer", dim=256, heads=4, temperature=0.1,
                                            static_query=True, seed=0))
  c.optimizer = ml_collections.ConfigDict(dict(
      lr=1e-3, schedule="constant", warmup_steps=0, b1=0.9, b2=0.999, eps=1e-8,
      weight_decay=0.0, grad_clip=1.0))
  c.train = ml_collections.ConfigDict(dict(
      batch_size=32, supervised_epochs=4, rce_epochs=4, grpo_epochs=6,
      lr=dict(supervised=1e-3, rce=1e-3, grpo=1e-3),
      grpo_mode="offline",  # offline: the beams, SFT as old + reference | on_policy: VLM rollouts
      group_size=4,  # on_policy rollouts per query (offline: the beams of a query)
      clip=0.2, adv_clip=5.0,
      adaptive_kl=dict(enabled=False, band=(0.01, 0.1), factor=1.5, beta_bounds=(0.001, 10.0)),
      rce_tau=(2.0, 0.5), sample_temperature=1.0))
  c.compare = ml_collections.ConfigDict(dict(
      kl_betas=(0.12, 0.15), epoch_selection="fixed",  # fixed: epochs below | val_loss
      epochs=(3, 6),  # GRPO epoch of policy A / policy B
      shots=(1, 2, 3, 4), index_shots=1, eval_batch_size=64))
  c.mesh = ml_collections.ConfigDict(mesh_config())
  if preset == "tiny":
    return c
  if preset == "qwen25vl3b":
    c.vlm.model.update(path="/path/to/Qwen2.5-VL-3B-Instruct", dtype="bfloat16",
                       param_dtype="bfloat16")
    c.prompt.system = LEVER_PLUS_SYSTEM
    c.data.update(source="vqa", num_train=5000, num_test=800,
                  pool_questions="/path/to/okvqa/OpenEnded_mscoco_train2014_questions.json",
                  pool_annotations="/path/to/okvqa/mscoco_train2014_annotations.json",
                  pool_images="/path/to/coco/train2014",
                  test_questions="/path/to/okvqa/OpenEnded_mscoco_val2014_questions.json",
                  test_annotations="/path/to/okvqa/mscoco_val2014_annotations.json",
                  test_images="/path/to/coco/val2014", test_limit=800, max_new_tokens=10)
    c.embedding.update(clip_path="/path/to/clip-vit-large-patch14", center=False,
                       batch_size=128, max_len=77)
    c.sampler.update(num_candidates=64)
    c.infoscore.update(shots=4, beam_size=5, batch_size=16)
    c.runner.update(pad_to=128, feature_bucket=1024)
    c.train.update(batch_size=64, supervised_epochs=10, rce_epochs=5, grpo_epochs=50)
    c.train.lr.update(supervised=1e-4, rce=1e-5, grpo=5e-6)
    c.train.adaptive_kl.enabled = True
    c.compare.update(epoch_selection="val_loss", epochs=(9, 42), eval_batch_size=16)
    return c
  raise KeyError(preset)
