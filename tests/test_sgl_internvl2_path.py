"""The real-checkpoint path on tiny weights: TextVQA records (real layout fixture) through the
InternVL2 prompt (ChatML, ``<img><IMG_CONTEXT>*N</img>``, dynamic tiling) of an HF tokenizer into
the guided pipeline, and the runner's files."""

import json
import os

import numpy as np
import tokenizers
import transformers

from jaxvlm import models
from jaxvlm.data.textvqa import read_textvqa
from jaxvlm.methods import sgl
from jaxvlm.training import vlm

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "textvqa")
SPECIAL = ["<unk>", "<pad>", "<IMG_CONTEXT>", "<img>", "</img>", "<|im_start|>", "<|im_end|>"]


def _tokenizer():
  words = ("system user assistant you are a helpful what is the brand of this camera does small "
           "white text spell kind beer ? \n").split(" ")
  vocab = {w: i for i, w in enumerate(SPECIAL + sorted(set(words) - {""}))}
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>",
                                              pad_token="<pad>")
  fast.add_special_tokens({"additional_special_tokens": SPECIAL[2:]})
  return fast


def test_textvqa_through_internvl2_prompts(tmp_path, max_num=2):
  tok = _tokenizer()
  image = tok.convert_tokens_to_ids("<IMG_CONTEXT>")
  hf = lambda width: vlm.tiny_vlm_config(
      "internvl_chat", img_context_token_id=image,
      llm_config=dict(vocab_size=len(tok), hidden_size=width, intermediate_size=2 * width,
                      num_hidden_layers=1))
  decoder = models.from_config(hf(32), seed=0)
  guide = sgl.with_vision_tower(models.from_config(hf(16), seed=1), decoder)
  gp, dp = (sgl.InternVL2Prompter(m, tok, max_num=max_num, image_size=32) for m in (guide, decoder))
  samples = read_textvqa(os.path.join(FIX, "TextVQA_0.5.1_val.json"),
                         os.path.join(FIX, "train_images"))
  per_tile = decoder.config.tokens_per_image
  tiles = [1, 1, 3]  # max_num 2: the 28 x 10 px image gives 2 tiles + thumbnail
  assert [gp.num_visual(s) for s in samples] == [t * per_tile for t in tiles]
  batch = dp.batch(samples[1:], [s.question for s in samples[1:]])
  assert batch["pixel_values"].shape == (sum(tiles[1:]), 3, 32, 32)
  assert ((batch["input_ids"] == image).sum(1) == [t * per_tile for t in tiles[1:]]).all()
  settings = sgl.SGLSettings(prune_ratio=0.4, max_new_tokens=2, guide_max_new_tokens=2,
                             early_exit_threshold=0.5)
  fn = lambda b, step: sgl.guided_batch(guide, decoder, gp, dp, b, settings, shared=True,
                                        step=step)
  summary = sgl.run_samples("textvqa_tiny", str(tmp_path), samples, fn, batch_size=2,
                            num_visual=gp.num_visual)
  assert summary["n"] == 3
  rows = json.loads((tmp_path / "textvqa_tiny.json").read_text())
  assert [r["question_id"] for r in rows] == [34602, 34603, 34604]
  assert [(r["num_visual"], r["num_kept"]) for r in rows] == [
      (t * per_tile, int(0.4 * t * per_tile)) for t in tiles]  # batches grouped by token count
  assert all(r["prediction"] == (r["small_answer"] if r["exited"] else r["large_answer"])
             for r in rows)
  stats = json.loads((tmp_path / "textvqa_tiny_stats.json").read_text())
  assert [len(d) for d in stats["distributions"]] == [t * per_tile for t in tiles]
  np.testing.assert_allclose([sum(d) for d in stats["distributions"]], 1.0, rtol=1e-6)
