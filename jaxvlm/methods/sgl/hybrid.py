"""Hybrid InternVL2 checkpoints (seed 002 §2: 2B vision + 1B language model / ``mlp1``).

:func:`build_hybrid` writes an ``internvl_chat`` HF folder whose ``vision_model.*`` tensors and
``vision_config`` come from one folder and everything else (``mlp1.*`` projector,
``language_model.*``, ``llm_config``, tokenizer and other files) from another; it refuses a
projector whose input width (``mlp1.0.weight``, ``mlp1.1.weight``) differs from what the vision
tower gives after pixel shuffle. ``jaxvlm sgl build-hybrid --vision A --lm B --out C`` runs it.
"""

from __future__ import annotations

import argparse
import os
import shutil

from jaxvlm import io
from jaxvlm.errors import ConfigError, TensorShapeError
from jaxvlm.models import weights
from jaxvlm.models.registry import read_config

VISION_PREFIX = "vision_model."
PROJECTOR_INPUTS = ("mlp1.0.weight", "mlp1.1.weight")  # LayerNorm [d_in], Linear [out, d_in]


def projector_input_width(hf: dict) -> int:
  """Width the projector must accept: vision hidden size x (1 / downsample_ratio)^2."""
  scale = round(1 / hf.get("downsample_ratio", 0.5))
  return int(hf["vision_config"]["hidden_size"]) * scale * scale


def build_hybrid(vision_path: str, lm_path: str, out_path: str) -> dict:
  """Writes the hybrid folder ``out_path``; returns its config."""
  va, lb = read_config(vision_path), read_config(lm_path)
  for path, hf in ((vision_path, va), (lm_path, lb)):
    if hf["model_type"] != "internvl_chat":
      raise ConfigError(f"{path}: model_type", hf["model_type"], "'internvl_chat'")
  hf = dict(lb, vision_config=va["vision_config"])
  for key in ("select_layer", "force_image_size"):
    if key in va:
      hf[key] = va[key]
  hf["downsample_ratio"] = va.get("downsample_ratio", 0.5)
  want = projector_input_width(hf)
  src_v, src_l = weights.read_safetensors_folder(vision_path), weights.read_safetensors_folder(
      lm_path)
  for name in PROJECTOR_INPUTS:
    if name in src_l.names:
      got = tuple(src_l.get(name).shape)
      if got[-1] != want:
        # the expected input width: the vision tower's hidden size after pixel shuffle
        raise TensorShapeError(name, got, got[:-1] + (want,), src_l.where(name))
  tensors = {n: src_v.get(n) for n in src_v.keys() if n.startswith(VISION_PREFIX)}
  tensors.update({n: src_l.get(n) for n in src_l.keys() if not n.startswith(VISION_PREFIX)})
  os.makedirs(out_path, exist_ok=True)
  for name in os.listdir(lm_path):  # tokenizer, generation config, remote code
    src = os.path.join(lm_path, name)
    weights_file = name.startswith("model") and (".safetensors" in name or name.endswith(".bin"))
    if os.path.isfile(src) and not weights_file and name != "config.json":
      shutil.copy2(src, os.path.join(out_path, name))
  weights.write_safetensors(tensors, out_path)
  io.write_json(os.path.join(out_path, "config.json"), hf)
  return hf


def add_arguments(parser: argparse.ArgumentParser) -> None:
  sub = parser.add_subparsers(dest="sgl_command", metavar="SGL_COMMAND", required=True)
  p = sub.add_parser("build-hybrid", help="vision tower from one InternVL2 folder, language "
                     "model + projector from another")
  p.add_argument("--vision", required=True, help="InternVL2 folder giving vision_model.*")
  p.add_argument("--lm", required=True, help="InternVL2 folder giving mlp1.* + language_model.*")
  p.add_argument("--out", required=True, help="output folder")
  c = sub.add_parser("compare-stats", help="seed 002 §4 statistics between two *_stats.json")
  c.add_argument("stats_p")
  c.add_argument("stats_q")
  c.add_argument("--top-k", type=int, default=16)


def main(args: argparse.Namespace) -> int:
  if args.sgl_command == "build-hybrid":
    hf = build_hybrid(args.vision, args.lm, args.out)
    print(f"hybrid written to {args.out} (vision {hf['vision_config']['hidden_size']}-wide from "
          f"{args.vision}, LM + projector from {args.lm})")
    return 0
  import json
  from jaxvlm.methods.sgl.runner import compare_stats
  print(json.dumps(compare_stats(args.stats_p, args.stats_q, args.top_k), indent=2))
  return 0
