"""AdaLLaVA on a real-format LLaVA folder: prompt ids through the folder's processor and chat
template, the published checkpoint layout (export, import, logits equal; unmapped keys and the
other granularity named; the input folder left unchanged), the instruction json reader."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxvlm.data import llava_instruct, vlm_inputs
from jaxvlm.errors import CheckpointError, ConfigError, DataFileError
from jaxvlm.methods import adallava as ada
from jaxvlm.methods.adallava import checkpoint, evaluate, training
from jaxvlm.models import weights
from jaxvlm.models.chat import load_vlm
from jaxvlm.models.tiny import write_tiny_vlm_folder

from tests.folder_hash import tree_digest

TEXTS = ["what color is the square", "red", "how many objects", "3", "where is the circle"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  path = tmp_path_factory.mktemp("llava") / "tiny"
  write_tiny_vlm_folder("llava", str(path), TEXTS, seed=0,
                        text_config={"num_hidden_layers": 3})
  return path


@pytest.fixture(scope="module")
def loaded(folder):
  vlm, processor = load_vlm(str(folder))
  return ada.AdaLlava(vlm, ada.AdaConfig(0, prefix_layers=1), nnx.Rngs(3)), processor


def _image(seed=0, size=(40, 52)):
  return np.random.default_rng(seed).integers(0, 255, size + (3,), dtype=np.uint8)


class _Record:
  question, answers, answer, question_type, question_id = "what color is the square", (
      "red",) * 10, "red", "color", 1

  def __init__(self, image):
    self.image = image


def test_prompt_ids_equal_the_processor_with_the_llava_template(loaded):
  _, processor = loaded
  record = _Record(_image())
  batch = vlm_inputs.encode(processor, [evaluate.lmms_vqav2_conversation(record)])
  text = ("USER: <image>\nwhat color is the square\nAnswer the question using a single word "
          "or phrase. ASSISTANT:")
  assert processor.apply_chat_template(evaluate.lmms_vqav2_conversation(record),
                                       add_generation_prompt=True, tokenize=False).strip() == text
  ref = processor(images=[record.image], text=[text], return_tensors="np")
  np.testing.assert_array_equal(batch["input_ids"], ref["input_ids"])
  np.testing.assert_allclose(batch["pixel_values"], ref["pixel_values"])


def _logits(model, processor):
  batch = vlm_inputs.encode(processor, [evaluate.lmms_vqav2_conversation(_Record(_image(s)))
                                        for s in range(2)])
  inp = ada.budget_inputs(model, batch["input_ids"], batch["attention_mask"],
                          batch["pixel_values"], latency_budget=0.7, token_budget=0.5)
  call, _ = model.prefill_inputs(jnp.asarray(inp.input_ids), jnp.asarray(inp.attention_mask),
                                 image_features=inp.image_features,
                                 budget=jnp.asarray(inp.budget),
                                 position_ids=jnp.asarray(inp.position_ids))
  return np.asarray(model(**call).logits)


def test_export_import_round_trip_logits_equal_and_input_untouched(loaded, folder, tmp_path):
  model, processor = loaded
  out = checkpoint.export_published(model, str(tmp_path / "pub"))
  names = set(weights.read_safetensors_folder(out).keys())
  assert {"scheduler.mlp_head.weight", "scheduler.scheduler_up_proj.net.0.weight",
          "scheduler.scheduler_up_proj.net.3.bias", "model.mm_projector.0.weight",
          "model.layers.0.self_attn.q_proj.weight", "lm_head.weight",
          "token_controller.feat.weight"} <= names
  config = json.loads((tmp_path / "pub" / "config.json").read_text())
  assert config["scheduler_type"] == "L" and config["num_prefix_layers"] == 1
  before = tree_digest(out)
  back, _ = checkpoint.import_published(out, model.config, str(folder))
  assert tree_digest(out) == before
  np.testing.assert_array_equal(_logits(back, processor), _logits(model, processor))


def test_unmapped_key_other_granularity_and_prefix_are_named(loaded, folder, tmp_path):
  model, _ = loaded
  out = checkpoint.export_published(model, str(tmp_path / "pub"))
  tensors = {n: weights.read_safetensors_folder(out).get(n)
             for n in weights.read_safetensors_folder(out).keys()}
  tensors["model.vision_token_controller.proj.weight"] = np.zeros((2, 2), np.float32)
  bad = tmp_path / "bad"
  weights.write_safetensors(tensors, str(bad))
  (bad / "config.json").write_text((tmp_path / "pub" / "config.json").read_text())
  with pytest.raises(CheckpointError, match=r"model\.vision_token_controller\.proj\.weight"):
    checkpoint.import_published(str(bad), model.config, str(folder))
  head = ada.AdaConfig(0, prefix_layers=1, granularity="head")
  with pytest.raises(CheckpointError, match=r"scheduler_type 'L'.*granularity is 'head'"):
    checkpoint.import_published(out, head, str(folder))
  with pytest.raises(ConfigError, match=r"model.adallava.prefix_layers: got 2"):
    checkpoint.import_published(out, ada.AdaConfig(0, prefix_layers=2), str(folder))


def test_instruct_reader_multi_turn_and_image_count(tmp_path, loaded):
  _, processor = loaded
  path, images = tmp_path / "instruct.json", tmp_path / "images"
  llava_instruct.write_llava_instruct(str(path), str(images), [
      ("a", _image(1, (32, 32)), [("what color is the square", "red"),
                                  ("how many objects", "3")])])
  records = llava_instruct.read_llava_instruct(str(path), str(images))
  examples = llava_instruct.training_examples(records)
  assert [a for _, a in examples] == ["red", "3"] and len(examples[1][0]) == 3
  rows = training.instruct_rows(processor, str(path), str(images))
  assert rows["input_ids"].shape[0] == 2 and rows["pixel_values"].shape[:2] == (2, 1)
  tok = processor.tokenizer
  for r, answer in enumerate(["red", "3"]):  # the loss sits on the answer and EOS only
    ids = rows["input_ids"][r][rows["loss_mask"][r] > 0]
    assert tok.decode(ids[:-1]).strip() == answer and ids[-1] == tok.eos_token_id
  data = json.loads(path.read_text())
  data[0]["conversations"][2]["value"] = "<image>\nhow many objects"
  path.write_text(json.dumps(data))
  with pytest.raises(DataFileError, match=r"record 0 \(id 'a'\): 2 <image> placeholder\(s\)"):
    llava_instruct.read_llava_instruct(str(path), str(images))


def test_budgets_outside_the_range_are_named(loaded):
  model, processor = loaded
  batch = vlm_inputs.encode(processor, [evaluate.lmms_vqav2_conversation(_Record(_image()))])
  args = (model, batch["input_ids"], batch["attention_mask"], batch["pixel_values"])
  for lat, tok, field in [(0.0, 1.0, "latency_budget"), (1.0, 1.5, "token_budget")]:
    with pytest.raises(ConfigError, match=rf"{field}: got {'0.0' if lat == 0 else '1.5'}"):
      ada.budget_inputs(*args, latency_budget=lat, token_budget=tok)


def test_mixed_plan_batch_flops_are_those_of_the_plan_that_executed(loaded):
  from jaxvlm.methods.adallava.flops import flops_per_sample
  model, processor = loaded  # 3 layers, layer 0 always on, 2 KV-head groups per layer
  batch = vlm_inputs.encode(processor, [evaluate.lmms_vqav2_conversation(_Record(_image(s)))
                                        for s in range(2)])
  inp = ada.budget_inputs(model, batch["input_ids"], batch["attention_mask"],
                          batch["pixel_values"], latency_budget=[0.34, 1.0], token_budget=1.0)
  plan = ada.unit_plan(model, inp)
  assert plan.sum(1).tolist() == [1, 3]  # the rows' own plans differ
  units = ada.executed_units(model, inp)
  np.testing.assert_array_equal(units, [2, 2, 2])  # the batch ran the union: every layer
  cfg = model.vlm.config.text
  executed = flops_per_sample(cfg, 20, 0, 3, layer_units=units)
  assert executed == flops_per_sample(cfg, 20, 3, 3)  # row 0 is charged what ran, 3 layers
  assert executed["total"] > flops_per_sample(cfg, 20, 1, 3)["total"]  # not its own 1 layer
