"""The one VLM input path: encode + chat_batch against transformers, loss masks by hand, the rows
layout, InternVL2 tiling against a NumPy transcription of ``dynamic_preprocess``, bad input."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from PIL import Image

import vlm_folders
from jaxvlm.data import images as image_lib, synthetic_vqa, vlm_inputs
from jaxvlm.errors import JaxVLMError, MissingFileError
from jaxvlm.models import tiny
from jaxvlm.models.chat import chat_batch, load_processor, load_vlm, user_turn

# three aspect ratios (height, width)
SIZES = [(70, 98), (112, 56), (84, 84)]
TEXT = {"qwen2_5_vl": "What is in the picture?", "llava": "what color is the square?",
        "internvl": "w9 w10"}


def _images(seed=0):
  rng = np.random.default_rng(seed)
  return [rng.integers(0, 256, (h, w, 3), np.uint8) for h, w in SIZES]


@pytest.fixture(scope="module", params=sorted(vlm_folders.BUILDERS))
def hf_folder(request, tmp_path_factory):
  folder = str(tmp_path_factory.mktemp(request.param))
  return request.param, folder, vlm_folders.BUILDERS[request.param](folder)


def test_chat_batch_equals_transformers_per_row(hf_folder):
  family, folder, hf = hf_folder
  model, processor = load_vlm(folder)
  conversations = [user_turn([im], TEXT[family]) for im in _images()]
  batch = vlm_inputs.encode(processor, conversations)
  assert batch["images_per_row"].tolist() == [1, 1, 1]
  assert batch["image_sizes"].tolist() == [list(s) for s in SIZES]
  assert batch["visual_tokens"].sum() == (batch["input_ids"] == model.config.image_token_id).sum()
  if family != "llava":  # CLIP crops every image to one size
    assert len(set(batch["visual_tokens"].tolist())) > 1
  with jax.default_matmul_precision("highest"):
    ours = chat_batch(model, processor, conversations, max_new_tokens=6, return_tokens=True)
  for row, conversation in enumerate(conversations):
    enc = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                        return_dict=True, return_tensors="pt")
    prompt = batch["input_ids"][row][batch["attention_mask"][row] == 1]
    assert prompt.tolist() == enc["input_ids"][0].tolist()
    with torch.no_grad():
      ref = hf.generate(**enc, max_new_tokens=6, do_sample=False)[0, enc["input_ids"].shape[1]:]
    assert ours[row] == ref.tolist(), (family, row)


def test_qwen_prompt_with_real_vocabulary(tmp_path):
  """Two images of different sizes in one turn: the real Qwen2.5 ids, one grid per image."""
  vlm_folders.qwen2_5_vl(str(tmp_path))
  processor = load_processor(str(tmp_path))
  assert processor.tokenizer("Hello, world!")["input_ids"] == [9707, 11, 1879, 0]
  ims = _images()[:2]
  batch = vlm_inputs.encode(processor, [user_turn(ims, "Compare them.")])
  ids = batch["input_ids"][0].tolist()
  assert ids[:3] == [151644, 8948, 198]  # <|im_start|> system \n
  grids = batch["image_grid_thw"]
  assert [ids.count(151652), ids.count(151653)] == [2, 2]
  assert ids.count(151655) == int(grids.prod(axis=1).sum()) // 4
  assert batch["position_ids"].shape == (3, 1, len(ids))


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory):
  samples = synthetic_vqa.make_vqa_split(40, seed=0)
  texts = [t for s in samples for t in (s.question, s.answer)]
  root = tmp_path_factory.mktemp("tiny")
  return samples, {f: tiny.write_tiny_vlm_folder(f, str(root / f), texts, vocab_size=320)
                   for f in tiny.FAMILIES}


# The answer turn as each family's template writes it, with its end-of-turn token.
ANSWER_TEXT = {"qwen2_5_vl": "{}<|im_end|>", "internvl_chat": "{}<|im_end|>",
               "llava": " {}</s>"}


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_loss_mask_is_the_answer_and_end_of_turn(tiny_folders, family):
  samples, folders = tiny_folders
  model, processor = load_vlm(folders[family])
  tok = processor.tokenizer
  rows = samples[:3]
  conversations = [user_turn([s.image], s.question) for s in rows]
  train = vlm_inputs.encode(processor, conversations, answers=[s.answer for s in rows])
  prompts = vlm_inputs.encode(processor, conversations)
  for i, s in enumerate(rows):
    mask = train["loss_mask"][i].astype(bool)
    want = tok(ANSWER_TEXT[family].format(s.answer), add_special_tokens=False)["input_ids"]
    assert train["input_ids"][i][mask].tolist() == want
    assert not (mask & (train["attention_mask"][i] == 0)).any()
    n = int(mask.sum())
    assert mask[-n:].all()  # the answer ends the row
    prompt = prompts["input_ids"][i][prompts["attention_mask"][i] == 1]
    full = train["input_ids"][i][train["attention_mask"][i] == 1]
    assert full[:-n].tolist() == prompt.tolist()
  rows_batch = vlm_inputs.as_rows(train, 2)
  assert all(v.shape[0] == 3 for v in rows_batch.values())
  with jax.default_matmul_precision("highest"):
    flat = model(**vlm_inputs.model_kwargs(model, train)).logits
    rowwise = jax.jit(lambda b: model(**vlm_inputs.model_kwargs(model, b)).logits)(rows_batch)
  np.testing.assert_allclose(np.asarray(rowwise), np.asarray(flat), atol=2e-5)


def _reference_tiles(image: np.ndarray, image_size: int, max_num: int) -> list[np.ndarray]:
  """NumPy transcription of InternVL2's ``dynamic_preprocess`` (grid choice, row-major crops,
  thumbnail last); PIL only resizes, as the published code does."""
  h, w = image.shape[:2]
  aspect = w / h
  ratios = sorted({(i, j) for n in range(1, max_num + 1) for i in range(1, n + 1)
                   for j in range(1, n + 1) if 1 <= i * j <= max_num}, key=lambda r: r[0] * r[1])
  best, best_diff = (1, 1), float("inf")
  for cols, rows in ratios:
    diff = abs(aspect - cols / rows)
    if diff < best_diff:
      best, best_diff = (cols, rows), diff
    elif diff == best_diff and w * h > 0.5 * image_size * image_size * cols * rows:
      best = (cols, rows)
  cols, rows = best
  resized = np.asarray(Image.fromarray(image).resize((cols * image_size, rows * image_size)))
  tiles = [resized[r * image_size:(r + 1) * image_size, c * image_size:(c + 1) * image_size]
           for r in range(rows) for c in range(cols)]
  if len(tiles) > 1:
    tiles.append(np.asarray(Image.fromarray(image).resize((image_size, image_size))))
  return tiles


@pytest.mark.parametrize("width, height", [(28, 28), (56, 28), (28, 91), (70, 35), (140, 70),
                                           (210, 21), (35, 49)])
def test_internvl2_tiles_match_numpy_reference(width, height):
  from jaxvlm.models.internvl.processor import InternVL2ImageProcessor
  image = np.random.default_rng(width * height).integers(0, 256, (height, width, 3), np.uint8)
  out = InternVL2ImageProcessor(image_size=28, max_num=6)([Image.fromarray(image)])
  want = _reference_tiles(image, 28, 6)
  assert out["num_patches"].tolist() == [len(want)]
  mean, std = np.asarray(image_lib.IMAGENET_MEAN), np.asarray(image_lib.IMAGENET_STD)
  ref = np.stack([((t / 255.0 - mean) / std).transpose(2, 0, 1) for t in want])
  np.testing.assert_allclose(out["pixel_values"], ref, atol=1e-5)


def test_internvl2_batch_of_mixed_sizes_has_per_sample_tiles(tiny_folders):
  _, folders = tiny_folders
  processor = load_processor(folders["internvl_chat"])
  rng = np.random.default_rng(1)
  ims = [rng.integers(0, 256, (h, w, 3), np.uint8) for h, w in [(32, 32), (32, 64), (96, 32)]]
  batch = vlm_inputs.encode(processor, [user_turn([im], "where?") for im in ims])
  assert batch["num_patches"].tolist() == [1, 3, 4]  # 1 tile; 2 + thumbnail; 3 + thumbnail
  assert batch["visual_tokens"].tolist() == [16, 48, 64]
  assert batch["pixel_values"].shape == (8, 3, 32, 32)
  assert (batch["input_ids"][:, :2] != processor.tokenizer.pad_token_id).any()
  first = batch["input_ids"][0][batch["attention_mask"][0] == 1]
  assert first[0] == processor.tokenizer.bos_token_id  # InternLM2 adds BOS, as chat() does


def test_bad_input_names_the_thing(tiny_folders, tmp_path):
  samples, folders = tiny_folders
  processor = load_processor(folders["llava"])
  missing = str(tmp_path / "nope.jpg")
  with pytest.raises(MissingFileError, match="nope.jpg"):
    vlm_inputs.encode(processor, [user_turn([missing], "q")])
  corrupt = tmp_path / "corrupt.jpg"
  corrupt.write_bytes(b"not an image")
  with pytest.raises(JaxVLMError, match="corrupt.jpg"):
    vlm_inputs.encode(processor, [user_turn([str(corrupt)], "q")])
  no_image = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q"}]}]
  with pytest.raises(vlm_inputs.ConversationError, match="conversation 0, message 0, item 0"):
    vlm_inputs.encode(processor, [no_image])
  extra_slot = user_turn([samples[0].image], "<image> and this?")  # two slots, one image
  with pytest.raises(JaxVLMError, match="conversation 0: image placeholders"):
    vlm_inputs.encode(processor, [extra_slot])
  with pytest.raises(JaxVLMError, match="model.family"):
    tiny.write_tiny_vlm_folder("blip", str(tmp_path / "blip"), ["x"])


def test_folder_without_chat_template_is_refused(tiny_folders, tmp_path):
  import json
  import shutil
  _, folders = tiny_folders
  folder = tmp_path / "no_template"
  shutil.copytree(folders["qwen2_5_vl"], folder)
  (folder / "chat_template.jinja").unlink(missing_ok=True)
  config = json.loads((folder / "tokenizer_config.json").read_text())
  config.pop("chat_template", None)
  (folder / "tokenizer_config.json").write_text(json.dumps(config))
  for name in ("processor_config.json",):
    settings = json.loads((folder / name).read_text())
    settings.pop("chat_template", None)
    (folder / name).write_text(json.dumps(settings))
  with pytest.raises(MissingFileError, match=f"{folder}.*chat_template.jinja|chat_template.jinja"):
    load_processor(str(folder))


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_tiny_folder_config_names_its_tokenizer_special_ids(tiny_folders, family, tmp_path):
  """config.json keeps the special-token ids of the folder's tokenizer (``transformers`` would
  otherwise fill in the real checkpoint's defaults, e.g. Qwen's 151643, outside a tiny vocab),
  and so does a model saved back by ``save_vlm``."""
  import json

  from jaxvlm.training.vlm import save_vlm
  folder = tiny_folders[1][family]
  model, processor = load_vlm(folder)
  tokenizer = getattr(processor, "tokenizer", processor)
  text_key = "llm_config" if family == "internvl_chat" else "text_config"
  for path in (folder, save_vlm(model, folder, str(tmp_path / "saved"))):
    with open(f"{path}/config.json") as f:
      text = json.load(f)[text_key]
    assert text["eos_token_id"] == tokenizer.eos_token_id, (family, path)
    assert text["pad_token_id"] == tokenizer.pad_token_id, (family, path)
    assert text["vocab_size"] >= len(tokenizer)
