"""The VLM SFT job: the preset's questions need the image; a smoke run trains a tiny real-format
folder and saves the result as a folder that loads back through the real loaders."""

import json
import os
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from jaxvlm import cli
from jaxvlm.config import load_config
from jaxvlm.eval import vqa_accuracy
from jaxvlm.models.chat import load_vlm
from jaxvlm.training import vlm

# compile-bound (tiny shapes, few steps): XLA's cheap compile mode (conftest)
pytestmark = pytest.mark.usefixtures("fast_compile")


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
  model, processor = load_vlm(metrics["model_folder"])
  assert type(processor).__name__ == "LlavaProcessor" and processor.tokenizer.chat_template
  assert model.config.text.num_hidden_layers == 2 and not os.path.exists(
      tmp_path / "model.partial")
