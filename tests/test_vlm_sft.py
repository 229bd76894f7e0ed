"""Tiny-VLM path: tokenizer ids, prompt layout, Qwen2.5-VL patch layout vs HF, the preset's
questions need the image, SFT smoke run."""

import json
import os
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from jaxvlm import cli
from jaxvlm.config import load_config
from jaxvlm.data import synthetic_vqa as sv, vlm_batches
from jaxvlm.data.tokenizer import CharTokenizer
from jaxvlm.eval import vqa_accuracy
from jaxvlm.models import from_config
from jaxvlm.training import vlm


def test_extra_tokens_do_not_move_existing_ids():
  plain, ext = CharTokenizer(), vlm_batches.vlm_tokenizer()
  assert plain.vocab_size == 99 and ext.vocab_size == 102
  assert plain.encode("what? 12") == ext.encode("what? 12")
  assert [ext.token_id(t) for t in vlm_batches.VLM_TOKENS] == [99, 100, 101]
  assert ext.decode([99, *ext.encode("red"), 101, 2, 5]) == "red"


@pytest.mark.parametrize("family", ["internvl_chat"])
def test_prompt_layout_with_shots(family):
  tok = vlm_batches.vlm_tokenizer()
  model = from_config(vlm.tiny_vlm_config(family))
  samples = sv.make_vqa_split(3, seed=0)
  batch = vlm_batches.build_vlm_batch(samples[2:], tok, model, shots=[samples[:2]])
  ids = batch["input_ids"][0]
  img = [100] + [99] * 16 + [101]
  expected = [1]
  for s in samples[:2]:
    expected += img + tok.encode(f"{s.question}\n{s.answer}\n")
  expected += img + tok.encode(f"{samples[2].question}\n") + tok.encode(samples[2].answer) + [2]
  assert ids.tolist() == expected
  assert ids[batch["loss_mask"][0] == 1].tolist() == tok.encode(samples[2].answer) + [2]
  assert batch["pixel_values"].shape == (1, 3, 3, 32, 32)
  left = vlm_batches.build_vlm_batch(samples[:2], tok, model, seq_len=60, with_answer=False)
  assert left["attention_mask"][:, -1].all() and not left["attention_mask"][:, 0].any()


def test_qwen_patches_match_hf_processor():
  transformers = pytest.importorskip("transformers")
  model = from_config(vlm.tiny_vlm_config("qwen2_5_vl"))
  image = sv.make_vqa_split(1, seed=2)[0].image
  tok = vlm_batches.vlm_tokenizer()
  fmt = vlm_batches.VLMPromptFormat.from_model(model, tok)
  ours = vlm_batches.generation_inputs(model, {"pixel_values": fmt.pixels(image)[None, None]})
  proc = transformers.Qwen2VLImageProcessor(patch_size=4, merge_size=2, temporal_patch_size=2,
                                            min_pixels=32 * 32, max_pixels=32 * 32)
  ref = proc(images=[image], return_tensors="np")
  np.testing.assert_allclose(np.asarray(ours["pixel_values"]), ref["pixel_values"], atol=1e-5)
  np.testing.assert_array_equal(ours["image_grid_thw"], ref["image_grid_thw"])


def _text_only_accuracy(samples) -> float:
  """VQA accuracy of the best image-blind answerer fitted on ``samples`` themselves: each question
  text answered by its most common answer (an upper bound for a model that ignores the image)."""
  by_question = defaultdict(list)
  for s in samples:
    by_question[s.question].append(s)
  return sum(vqa_accuracy(Counter(t.answer for t in group).most_common(1)[0][0], t.answers)
             for group in by_question.values() for t in group) / len(samples)


def test_vlm_tiny_questions_need_the_image():
  """The preset's mix is far from answerable by text alone; ``label`` (one fixed mapping) is
  answerable from the question text, which is why the preset leaves it out."""
  config = load_config(str(Path(__file__).parents[1] / "configs" / "sft.py") + ":vlm_tiny")
  assert _text_only_accuracy(vlm.synthetic_split(config.data, 400, 0)) < 0.4
  config.data.question_types = ("label",)
  assert _text_only_accuracy(vlm.synthetic_split(config.data, 100, 0)) == 1.0


def test_vlm_tiny_sft_smoke(tmp_path):
  args = ["run", "--config", "configs/sft.py:vlm_tiny", "--workdir", str(tmp_path),
          "--config.train.steps=3", "--config.train.log_every=1", "--config.data.num_train=32",
          "--config.data.num_test=8", "--config.train.eval_batch_size=8",
          "--config.train.batch_size=8", "--config.data.max_new_tokens=4"]
  assert cli.main(args) == 0
  metrics = json.loads((tmp_path / "metrics.json").read_text())
  assert metrics["steps"] == 3 and metrics["family"] == "llava"
  assert 0.0 <= metrics["accuracy_after"] <= 1.0
  assert set(metrics["per_type_blank_images"]) <= {"color", "shape", "count", "position"}
  report = (tmp_path / "report.md").read_text()
  assert "VQA accuracy (held-out)" in report and "blank images" in report
  assert os.path.exists(tmp_path / "loss.png") and os.listdir(tmp_path / "checkpoints")
