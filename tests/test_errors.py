"""Bad input gives errors that name the file, tensor or field."""

import json
import os

import huggingface_hub
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

from jaxvlm import errors
from jaxvlm.generation import generate
from jaxvlm.models import from_config, load_pretrained
from jaxvlm.models.paths import check_model_path, resolve_model_path
from jaxvlm.models.tokenizer import load_tokenizer

TINY = dict(model_type="llama", vocab_size=64, hidden_size=32, intermediate_size=48,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


@pytest.fixture
def hf_folder(tmp_path):
  torch.manual_seed(0)
  cfg = transformers.LlamaConfig(**{k: v for k, v in TINY.items() if k != "model_type"})
  transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path)
  return tmp_path


def test_missing_config_json_names_the_file(tmp_path):
  with pytest.raises(errors.MissingFileError, match="config.json"):
    load_pretrained(str(tmp_path))


def test_missing_safetensors_names_the_file(hf_folder):
  os.remove(hf_folder / "model.safetensors")
  with pytest.raises(errors.MissingFileError, match="model.safetensors"):
    load_pretrained(str(hf_folder))


def test_missing_shard_listed_in_index(hf_folder):
  tensors = load_file(hf_folder / "model.safetensors")
  os.remove(hf_folder / "model.safetensors")
  names = sorted(tensors)
  save_file({n: tensors[n] for n in names[:5]}, hf_folder / "a.safetensors")
  index = {"weight_map": {**{n: "a.safetensors" for n in names[:5]},
                          **{n: "b.safetensors" for n in names[5:]}}}
  (hf_folder / "model.safetensors.index.json").write_text(json.dumps(index))
  with pytest.raises(errors.MissingFileError, match="b.safetensors"):
    load_pretrained(str(hf_folder))


def test_unknown_model_type(hf_folder):
  cfg = json.loads((hf_folder / "config.json").read_text())
  cfg["model_type"] = "gpt_unknown"
  (hf_folder / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(errors.UnknownModelTypeError, match="gpt_unknown"):
    load_pretrained(str(hf_folder))


def test_tensor_shape_mismatch_names_tensor_and_shapes(hf_folder):
  cfg = json.loads((hf_folder / "config.json").read_text())
  cfg["intermediate_size"] = 40
  (hf_folder / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(errors.TensorShapeError, match=r"mlp\.(gate|up|down)_proj.*\(48, 32\).*\(40, 32\)|\(32, 48\).*\(32, 40\)"):
    load_pretrained(str(hf_folder))


def test_unconsumed_and_missing_tensors_are_named(hf_folder):
  tensors = load_file(hf_folder / "model.safetensors")
  tensors["model.layers.0.extra.weight"] = np.zeros((2, 2), np.float32)
  del tensors["model.norm.weight"]
  save_file(tensors, hf_folder / "model.safetensors")
  with pytest.raises(errors.UnusedTensorError) as e:
    load_pretrained(str(hf_folder))
  assert "model.layers.0.extra.weight" in str(e.value) and "model.norm.weight" in str(e.value)


def test_bad_config_fields():
  with pytest.raises(errors.ConfigError, match="num_key_value_heads"):
    from_config({**TINY, "num_key_value_heads": 3})
  with pytest.raises(errors.ConfigError, match="hidden_act"):
    from_config({**TINY, "hidden_act": "gelu"})
  with pytest.raises(errors.ConfigError, match="rope_type"):
    from_config({**TINY, "rope_scaling": {"rope_type": "yarn", "factor": 2.0}})


def test_generate_rejects_bad_arguments():
  model = from_config(TINY)
  ids = np.ones((1, 4), np.int32)
  with pytest.raises(errors.ConfigError, match="max_new_tokens"):
    generate(model, ids, max_new_tokens=0)
  with pytest.raises(errors.ConfigError, match="top_p"):
    generate(model, ids, max_new_tokens=2, temperature=1.0, top_p=0.0)
  with pytest.raises(errors.ConfigError, match="stop_check_every"):
    generate(model, ids, max_new_tokens=2, stop_check_every=0)
  with pytest.raises(errors.ShapeError, match="attention_mask"):
    generate(model, ids, np.ones((1, 5)), max_new_tokens=2)


# ----- one model path resolver for every loader -----------------------------------------------
def _fake_cache(root, repo_id, files):
  """A Hugging Face hub cache holding one snapshot of ``repo_id``; returns the snapshot folder."""
  repo = root / f"models--{repo_id.replace('/', '--')}"
  snapshot = repo / "snapshots" / ("a" * 40)
  snapshot.mkdir(parents=True)
  (repo / "refs").mkdir()
  (repo / "refs" / "main").write_text("a" * 40)
  for name, text in files.items():
    (snapshot / name).write_text(text)
  return snapshot


def test_local_folder_is_used_as_is(hf_folder):
  assert resolve_model_path(str(hf_folder)) == str(hf_folder)


@pytest.mark.parametrize("loader", [load_pretrained, load_tokenizer])
def test_offline_hub_id_fails_in_every_loader_naming_it(monkeypatch, loader):
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  with pytest.raises(errors.ConfigError) as e:
    loader("no-such-org/no-such-model", what="vlm.path")
  assert str(e.value).startswith("vlm.path: got 'no-such-org/no-such-model', expected an "
                                 "existing local model folder")
  assert "HF_HUB_OFFLINE=1" in str(e.value) and "\n" not in str(e.value)


def test_offline_hub_id_found_in_the_cache(monkeypatch, tmp_path):
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
  snapshot = _fake_cache(tmp_path, "org/cached-model", {"config.json": "{}"})
  assert resolve_model_path("org/cached-model") == str(snapshot)


def test_online_hub_id_is_downloaded_and_download_errors_are_one_line(monkeypatch, tmp_path):
  monkeypatch.setenv("HF_HUB_OFFLINE", "0")
  monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
  calls = []

  def download(repo_id, **kwargs):
    calls.append((repo_id, kwargs))
    if repo_id == "org/missing":
      raise OSError("404 Client Error.\nRepository Not Found for url")
    return str(tmp_path)

  monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
  assert check_model_path("org/model") is None and not calls  # validation downloads nothing
  assert resolve_model_path("org/model") == str(tmp_path)
  assert calls[0][0] == "org/model" and "*.bin" in calls[0][1]["ignore_patterns"]
  with pytest.raises(errors.ConfigError, match=r"^model\.path: got 'org/missing', .*OSError: "
                                               r"404 Client Error\. Repository Not Found"):
    resolve_model_path("org/missing")


def test_a_path_that_is_neither_folder_nor_hub_id_is_named(tmp_path):
  with pytest.raises(errors.MissingFileError, match=r"model\.path.*'/no/such/folder'"):
    resolve_model_path("/no/such/folder")
  (tmp_path / "weights.safetensors").write_bytes(b"")
  with pytest.raises(errors.ConfigError, match=r"model\.path: got '.*weights\.safetensors'.*"
                                               r"not a file"):
    resolve_model_path(str(tmp_path / "weights.safetensors"))
