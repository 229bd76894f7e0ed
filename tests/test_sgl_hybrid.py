"""``jaxvlm sgl build-hybrid``: the vision tower of one InternVL2 folder + the LM and projector of
another load with ``load_pretrained`` and run; a projector of another input width is refused
by name."""

import os

import numpy as np

from jaxvlm import cli, models
from jaxvlm.models import tiny
from jaxvlm.models.weights import read_safetensors_folder

TOKENIZER = tiny.train_tokenizer("internvl_chat", ["what number is on the red object?"])


def _save(path, seed, vision_width=64, lm_width=64):
  hf = tiny.tiny_vlm_config("internvl_chat", TOKENIZER,
                            vision_config=dict(hidden_size=vision_width),
                            llm_config=dict(hidden_size=lm_width, intermediate_size=2 * lm_width,
                                            num_hidden_layers=1))
  models.save_pretrained(models.from_config(hf, seed=seed), str(path))
  (path / "tokenizer_config.json").write_text("{}")
  (path / "modeling_internvl_chat.py").write_text("# remote code\n")
  return str(path)


def test_build_hybrid_loads_and_runs(tmp_path, capsys):
  vision = _save(tmp_path / "big", seed=0, lm_width=96)
  lm = _save(tmp_path / "small", seed=1, lm_width=32)
  out = str(tmp_path / "hybrid")
  assert cli.main(["sgl", "build-hybrid", "--vision", vision, "--lm", lm, "--out", out]) == 0
  assert "hybrid written" in capsys.readouterr().out
  got, a, b = (read_safetensors_folder(p) for p in (out, vision, lm))
  assert set(got.keys()) == set(b.keys())
  for name in got.keys():
    src = a if name.startswith("vision_model.") else b
    np.testing.assert_array_equal(got.get(name), src.get(name))
  assert all(os.path.exists(os.path.join(out, f))
             for f in ("tokenizer_config.json", "modeling_internvl_chat.py"))
  model = models.load_pretrained(out)
  ids = np.asarray([[1] + [model.config.image_token_id] * model.config.tokens_per_image + [5, 6]])
  logits = model(input_ids=ids, pixel_values=np.zeros((1, 3, 32, 32), np.float32)).logits
  assert logits.shape == (1, ids.shape[1], model.config.text.vocab_size)
  assert np.isfinite(np.asarray(logits)).all()


def test_mismatched_projector_width_is_refused(tmp_path, capsys):
  vision = _save(tmp_path / "wide", seed=0, vision_width=32)
  lm = _save(tmp_path / "small", seed=1)
  status = cli.main(["sgl", "build-hybrid", "--vision", vision, "--lm", lm, "--out",
                     str(tmp_path / "hybrid")])
  err = capsys.readouterr().err
  assert status == 2 and "mlp1.0.weight" in err and "(128,)" in err and "(256,)" in err
  assert not os.path.exists(tmp_path / "hybrid" / "config.json")
