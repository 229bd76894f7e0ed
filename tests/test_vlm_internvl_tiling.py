"""InternVL2 dynamic tiling and image-processor helpers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from jaxvlm.data import images
from jaxvlm.errors import ConfigError


def test_target_ratios_bounded_and_sorted_by_tile_count():
  ratios = images.target_ratios(1, 6)
  counts = [c * r for c, r in ratios]
  assert counts == sorted(counts) and max(counts) == 6 and min(counts) == 1
  assert (3, 2) in ratios and (2, 3) in ratios and (4, 2) not in ratios
  with pytest.raises(ConfigError, match="max_num"):
    images.target_ratios(1, 0)


@pytest.mark.parametrize("size, max_num, want", [
    ((448, 448), 12, (1, 1)),
    ((800, 400), 12, (2, 1)),
    ((400, 1300), 12, (1, 3)),
    ((1000, 500), 12, (2, 1)),  # ties (2,1) vs (4,2): image too small for 8 tiles
    ((2000, 1000), 12, (4, 2)),  # large enough: the larger grid wins the tie
    ((3000, 300), 6, (6, 1)),
])
def test_closest_aspect_ratio(size, max_num, want):
  assert images.closest_aspect_ratio(*size, images.target_ratios(1, max_num), 448) == want


def test_tiles_are_row_major_crops_plus_thumbnail():
  s = 28
  img = np.zeros((2 * s, 3 * s, 3), np.uint8)  # 3 cols x 2 rows of distinct colours
  colours = np.random.default_rng(0).integers(0, 256, size=(2, 3, 3))
  for r in range(2):
    for c in range(3):
      img[r * s:(r + 1) * s, c * s:(c + 1) * s] = colours[r, c]
  tiles = images.dynamic_tiles(Image.fromarray(img), max_num=6, image_size=s)
  assert len(tiles) == 7 and all(t.size == (s, s) for t in tiles)
  for k, tile in enumerate(tiles[:6]):
    centre = np.asarray(tile)[s // 2, s // 2]
    np.testing.assert_array_equal(centre, colours[k // 3, k % 3])
  assert len(images.dynamic_tiles(Image.fromarray(img[:s, :s]), image_size=s)) == 1


def test_pixel_values_imagenet_normalised(tmp_path):
  path = tmp_path / "grey.png"
  Image.fromarray(np.full((56, 112, 3), 128, np.uint8)).save(path)
  px = images.internvl2_pixel_values(str(path), max_num=4, image_size=28)
  assert px.shape == (3, 3, 28, 28) and px.dtype == np.float32  # 2 tiles + thumbnail
  want = (128 / 255 - np.asarray(images.IMAGENET_MEAN)) / np.asarray(images.IMAGENET_STD)
  np.testing.assert_allclose(px[:, :, 5, 5], np.broadcast_to(want, (3, 3)), rtol=1e-5)
  assert images.internvl2_image_prompt(3, 2) == "<img>" + "<IMG_CONTEXT>" * 6 + "</img>"


def test_internvl2_prompt_expands_the_image_once():
  text = images.internvl2_prompt("What is this?", num_tiles=3, tokens_per_tile=2,
                                 system_message="S")
  assert text == ("<|im_start|>system\nS<|im_end|><|im_start|>user\n<img>" + "<IMG_CONTEXT>" * 6
                  + "</img>\nWhat is this?<|im_end|><|im_start|>assistant\n")
  with pytest.raises(ConfigError, match="question"):
    images.internvl2_prompt("<image> and <image>", 1, 1)


def test_hf_image_processor_from_folder(tmp_path):
  import transformers
  assert images.hf_image_processor(str(tmp_path)) is None
  transformers.CLIPImageProcessor(size={"shortest_edge": 42},
                                  crop_size={"height": 42, "width": 42}).save_pretrained(tmp_path)
  proc = images.hf_image_processor(str(tmp_path))
  out = proc(images=[np.zeros((60, 80, 3), np.uint8)], return_tensors="np")
  assert out["pixel_values"].shape == (1, 3, 42, 42)
