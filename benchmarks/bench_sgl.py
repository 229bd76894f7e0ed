"""SGL benchmark (lent GPU): InternVL2-2B guide + InternVL2-8B decoder, end to end per batch.

Shapes of the real checkpoints, random bf16 weights: InternViT-300M-448px (both models, the same
weights: shared vision holds), InternLM2-1.8B (guide) and InternLM2.5-7B (decoder) language
models, pixel shuffle 0.5 + ``mlp1``. Batch 8, one 448² tile + thumbnail per image (512 visual
tokens), 32 text tokens, 16 new tokens (no EOS).

* ours, keep r (1.0 / 0.4 / 0.09): one InternViT encoding for both models, the guide's 16-token
  generation, its map-free importance and early-exit scores (:func:`jaxvlm.methods.sgl.
  guide_on_batch`), ``int(512 r)`` visual tokens kept from layer 0 (``select_keep`` on device)
  and the decoder's KV-cached generation on them (:func:`jaxvlm.methods.sgl.pruned_generate`);
  cuDNN attention. The end-to-end run of the real preset on real-format folders (dynamic tiles,
  early exit) is ``benchmarks/run_sgl_real.py``.
* ours, 8B alone: :func:`jaxvlm.generation.generate` of the decoder with all visual tokens.
* PyTorch 8B alone (keep 1.0, the anchor): what ``InternVLChatModel.generate`` does, written out
  because InternVL2 is not in ``transformers``: a plain torch InternViT-300M (same layer layout,
  sdpa attention), pixel shuffle, ``mlp1``, visual tokens merged into the embeddings, then
  ``transformers.LlamaForCausalLM.generate(inputs_embeds=...)`` with InternLM2.5-7B's shape (the
  same decoder as InternLM2 up to the fused ``wqkv`` layout), sdpa, bf16. Its own random weights:
  this is a timing anchor (numerical parity of our InternVL2 against the HF remote code is
  ``tests/test_vlm_internvl_parity.py``).

Speedup = PyTorch 8B time / ours. GPU: ``PYTHONPATH=. python benchmarks/bench_sgl.py`` (writes
``$OUT/sgl.json``). CPU smoke run: ``--tiny`` (tiny shapes, float32, batch 2, 3 new tokens).
``--profile DIR`` also traces one keep-0.4 pipeline run (``jax.profiler``) and prints its kernel
time, the device's busy share and its longest idle gaps (where the device waited for the host).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import types

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # torch shares the GPU

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from benchmarks.bench_decode_step import INTERNLM2_1_8B, INTERNLM2_5_7B  # noqa: E402
from benchmarks.timing import (markdown_table, median_seconds, torch_sync, trace_summary,  # noqa
                               write_results)
from jaxvlm import models  # noqa: E402
from jaxvlm.generation import generate  # noqa: E402
from jaxvlm import frozen  # noqa: E402
from jaxvlm.methods import sgl  # noqa: E402
from jaxvlm.methods.sgl import pipeline  # noqa: E402
from jaxvlm.methods.sgl.importance import kept_counts  # noqa: E402

IMG = 92546  # <IMG_CONTEXT> of the InternVL2 tokenizer
VIT_300M = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                num_attention_heads=16, image_size=448, patch_size=14, qkv_bias=True,
                qk_normalization=False, norm_type="layer_norm", layer_norm_eps=1e-6,
                hidden_act="gelu", num_channels=3)
FULL = dict(batch=8, tiles=2, text=32, new=16, dtype="bfloat16", attention="cudnn", device="cuda",
            warmup=2, iters=5, keeps=(1.0, 0.4, 0.09), vision=VIT_300M, guide=INTERNLM2_1_8B,
            decoder=INTERNLM2_5_7B, image=IMG)
TINY = dict(batch=2, tiles=2, text=6, new=3, dtype="float32", attention="xla", device="cpu",
            warmup=1, iters=1, keeps=(1.0, 0.4, 0.09),
            vision=dict(VIT_300M, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=2, image_size=112),
            guide=dict(INTERNLM2_1_8B, vocab_size=128, hidden_size=32, intermediate_size=64,
                       num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1),
            decoder=dict(INTERNLM2_1_8B, vocab_size=128, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
            image=120)


def internvl_chat(vision: dict, llm: dict, image: int) -> dict:
  return dict(model_type="internvl_chat", architectures=["InternVLChatModel"], vision_config=vision,
              llm_config=llm, select_layer=-1, downsample_ratio=0.5, ps_version="v2",
              template="internlm2-chat", img_context_token_id=image)


def prompt_batch(s: dict, tokens_per_image: int, rng) -> dict:
  """``[bos] text <img> IMG*N </img> text`` rows (random text ids below the special ids)."""
  b, t = s["batch"], s["text"]
  text = rng.integers(3, min(s["image"], 90000), (b, t))
  ids = np.concatenate([np.ones((b, 1), int), text[:, :t // 4], np.full((b, 1), 4),
                        np.full((b, tokens_per_image), s["image"]), np.full((b, 1), 5),
                        text[:, t // 4:]], axis=1).astype(np.int32)
  side = s["vision"]["image_size"]
  px = rng.standard_normal((b * s["tiles"], 3, side, side)).astype(np.float32)
  return {"input_ids": ids, "attention_mask": np.ones_like(ids), "pixel_values": px}


def ours(s: dict, batch: dict) -> tuple[dict, dict]:
  """(label -> zero-arg run function, info) for our pipeline at each keep and the 8B alone."""
  kw = dict(dtype=s["dtype"], param_dtype=s["dtype"], attention_impl=s["attention"])
  decoder = models.from_config(internvl_chat(s["vision"], s["decoder"], s["image"]), seed=0, **kw)
  guide = sgl.with_vision_tower(
      models.from_config(internvl_chat(s["vision"], s["guide"], s["image"]), seed=1, **kw), decoder)
  assert sgl.shares_vision(guide, decoder)
  marks = types.SimpleNamespace(image_token_id=s["image"], eos_token_id=(), pad_token_id=0)
  px = jnp.asarray(batch["pixel_values"], s["dtype"])

  def pipeline_run(keep: float):
    features = pipeline.vision_features(guide, px)
    image = pipeline.project(guide, features)
    g = sgl.guide_on_batch(guide, marks, batch, image, s["new"])
    kept = sgl.select_keep(g["importance"], g["counts"], keep)
    d_image = pipeline.project(decoder, features)
    settings = sgl.SGLSettings(prune_ratio=keep, prune_layer=0.0, max_new_tokens=s["new"])
    return sgl.pruned_generate(decoder, marks, batch, kept, kept_counts(g["counts"], keep),
                               settings, image_features=d_image)

  def alone():
    return generate(decoder, batch["input_ids"], batch["attention_mask"], s["new"],
                    temperature=0.0, eos_token_id=(), pad_token_id=0, pixel_values=px).sequences

  runs = {f"ours keep {k}": (lambda k=k: pipeline_run(k)) for k in s["keeps"]}
  runs["ours 8B alone, keep 1.0"] = alone
  # the keep-0.4 pipeline's stages, each timed alone on the outputs of the previous ones
  features = pipeline.vision_features(guide, px)
  image, d_image = pipeline.project(guide, features), pipeline.project(decoder, features)
  g = sgl.guide_on_batch(guide, marks, batch, image, s["new"])
  kept = sgl.select_keep(g["importance"], g["counts"], 0.4)
  count = kept_counts(g["counts"], 0.4)
  settings = sgl.SGLSettings(prune_ratio=0.4, prune_layer=0.0, max_new_tokens=s["new"])
  new, _, cache = pipeline._generate(guide, marks, batch, s["new"], image_features=image,
                                     return_cache=True)
  markers, mask, query = pipeline._with_generated(batch, new, np.full(len(new), s["new"]),
                                                  s["image"])
  seq = np.concatenate([batch["input_ids"], new], 1)
  embeds = pipeline._embed(guide, jnp.asarray(batch["input_ids"]), jnp.asarray(new), image)
  stages = {
      "vision + both projections": lambda: [pipeline.project(m, f) for f in [
          pipeline.vision_features(guide, px)] for m in (guide, decoder)],
      "guide generate + importance": lambda: sgl.guide_on_batch(guide, marks, batch, image,
                                                                s["new"])["importance"],
      "guide generate alone": lambda: pipeline._generate(guide, marks, batch, s["new"],
                                                         image_features=image)[0],
      "guide importance on its cache": lambda: sgl.visual_importance(
          guide, seq, mask, query, markers == s["image"], cache=cache, inputs_embeds=embeds,
          return_logprobs=True),
      "select_keep": lambda: sgl.select_keep(g["importance"], g["counts"], 0.4),
      "decoder pruned generate": lambda: sgl.pruned_generate(
          decoder, marks, batch, kept, count, settings, image_features=d_image),
      "decoder pruned prefill (1 new token)": lambda: sgl.pruned_generate(
          decoder, marks, batch, kept, count, dataclasses.replace(settings, max_new_tokens=1),
          image_features=d_image)}
  return runs, {"stages": stages, "visual_tokens": int((batch["input_ids"][0] == s["image"]).sum()),
                "models": (guide, decoder)}


class TorchViT(torch.nn.Module):
  """InternViT (``InternVisionModel`` layout: CLS + learned positions, pre-norm blocks with layer
  scale, no final norm) + pixel shuffle 0.5 + ``mlp1``, in plain torch."""

  def __init__(self, v: dict, text_hidden: int):
    super().__init__()
    d, self.heads = v["hidden_size"], v["num_attention_heads"]
    n = (v["image_size"] // v["patch_size"]) ** 2
    self.patch = torch.nn.Conv2d(3, d, v["patch_size"], v["patch_size"])
    self.cls = torch.nn.Parameter(torch.randn(1, 1, d) * 0.02)
    self.pos = torch.nn.Parameter(torch.randn(1, n + 1, d) * 0.02)
    block = lambda: torch.nn.ModuleDict(dict(
        norm1=torch.nn.LayerNorm(d, eps=1e-6), qkv=torch.nn.Linear(d, 3 * d),
        proj=torch.nn.Linear(d, d), norm2=torch.nn.LayerNorm(d, eps=1e-6),
        fc1=torch.nn.Linear(d, v["intermediate_size"]),
        fc2=torch.nn.Linear(v["intermediate_size"], d)))
    self.blocks = torch.nn.ModuleList([block() for _ in range(v["num_hidden_layers"])])
    self.ls = torch.nn.Parameter(torch.full((v["num_hidden_layers"], 2, d), 0.1))
    self.mlp1 = torch.nn.Sequential(torch.nn.LayerNorm(4 * d), torch.nn.Linear(4 * d, text_hidden),
                                    torch.nn.GELU(), torch.nn.Linear(text_hidden, text_hidden))

  def forward(self, px):
    x = self.patch(px).flatten(2).transpose(1, 2)
    x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
    b, s, d = x.shape
    for i, blk in enumerate(self.blocks):
      q, k, v = blk["qkv"](blk["norm1"](x)).view(b, s, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
      a = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, s, d)
      x = x + self.ls[i, 0] * blk["proj"](a)
      x = x + self.ls[i, 1] * blk["fc2"](torch.nn.functional.gelu(blk["fc1"](blk["norm2"](x))))
    x = x[:, 1:]
    g = int((s - 1) ** 0.5)  # pixel shuffle 0.5 (ps_version v2), as InternVLChatModel
    x = x.reshape(b, g, g // 2, 2 * d).permute(0, 2, 1, 3).reshape(b, g // 2, g // 2, 4 * d)
    return self.mlp1(x.permute(0, 2, 1, 3).reshape(b, -1, 4 * d))


def torch_models(s: dict):
  """The PyTorch anchor's models: a ``transformers`` LLaMA-layout decoder (sdpa) and the
  InternViT + ``mlp1`` tower, random weights at ``s``'s shapes and dtype."""
  llm = s["decoder"]
  dtype = getattr(torch, s["dtype"])
  cfg = transformers.LlamaConfig(
      vocab_size=llm["vocab_size"], hidden_size=llm["hidden_size"],
      intermediate_size=llm["intermediate_size"], num_hidden_layers=llm["num_hidden_layers"],
      num_attention_heads=llm["num_attention_heads"],
      num_key_value_heads=llm["num_key_value_heads"], rope_theta=llm["rope_theta"],
      rms_norm_eps=llm["rms_norm_eps"], max_position_embeddings=llm["max_position_embeddings"])
  with torch.device(s["device"]):
    lm = transformers.LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa",
                                                    dtype=dtype).eval()
    vit = TorchViT(s["vision"], llm["hidden_size"]).to(dtype).eval()
  return lm, vit


def torch_8b(s: dict, batch: dict, models=None):
  """The PyTorch anchor's run function on ``batch`` (see the module docstring); ``models`` from
  :func:`torch_models` (built when not given)."""
  lm, vit = models or torch_models(s)
  dtype = getattr(torch, s["dtype"])
  ids = torch.tensor(batch["input_ids"], device=s["device"])
  mask = torch.tensor(batch["attention_mask"], device=s["device"])
  px = torch.tensor(batch["pixel_values"], device=s["device"], dtype=dtype)

  def run():
    with torch.inference_mode():
      embeds = lm.get_input_embeddings()(ids)
      vis = vit(px).reshape(-1, embeds.shape[-1])
      embeds[ids == s["image"]] = vis.to(embeds.dtype)
      return lm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=s["new"],
                         min_new_tokens=s["new"], do_sample=False, pad_token_id=0)
  return run


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tiny", action="store_true", help="CPU smoke run with tiny shapes")
  parser.add_argument("--profile", help="trace one keep-0.4 pipeline run into this folder")
  parser.add_argument("--tiles", type=int, help="tiles per image (default 2; the real preset's "
                      "4:3 TextVQA photos take 7: six tiles + thumbnail)")
  parser.add_argument("--new", type=int, help="new tokens (default 16; the real preset: 10)")
  parser.add_argument("--attention", choices=("cudnn", "auto", "xla"),
                      help="our attention implementation (default cudnn on GPU)")
  args = parser.parse_args(argv)
  s = TINY if args.tiny else FULL
  s = dict(s, **{k: v for k, v in (("tiles", args.tiles), ("new", args.new),
                                   ("attention", args.attention)) if v is not None})
  rng = np.random.default_rng(0)
  probe = internvl_chat(s["vision"], s["decoder"], s["image"])
  tokens = models.config_from_hf(probe).tokens_per_image * s["tiles"]
  batch = prompt_batch(s, tokens, rng)
  torch_run = torch_8b(s, batch)
  time_anchor = lambda: median_seconds(torch_run, sync=torch_sync, warmup=s["warmup"],
                                       iters=s["iters"])
  anchors = [time_anchor()]  # timed before and after ours; the faster one is the anchor
  runs, info = ours(s, batch)
  stages = info.pop("stages")
  with frozen.freeze(*info.pop("models")):
    times = {k: median_seconds(fn, warmup=s["warmup"], iters=s["iters"]) for k, fn in runs.items()}
    info["stages_keep_0.4_ms"] = {k: 1e3 * median_seconds(fn, warmup=1, iters=s["iters"])
                                  for k, fn in stages.items()}
    if args.profile:
      with jax.profiler.trace(args.profile):
        jax.block_until_ready(runs["ours keep 0.4"]())
      info["profile_keep_0.4"] = trace_summary(args.profile, top=15, gaps=12)
      print("keep 0.4 profile:", json.dumps(info["profile_keep_0.4"], indent=1))
  anchors.append(time_anchor())
  info["pytorch_8b_ms_before_after"] = [1e3 * a for a in anchors]
  anchor = min(anchors)
  case = (f"B={s['batch']}, {s['tiles']} tiles ({info['visual_tokens']} visual tokens) + "
          f"{s['text']} text tokens, {s['new']} new, {s['attention']} attention")
  rows = [dict(run=k, case=case, ms_per_batch=t * 1e3, pytorch_8b_ms=anchor * 1e3,
               speedup=anchor / t) for k, t in times.items()]
  rows.append(dict(run="PyTorch 8B alone, keep 1.0", case=case, ms_per_batch=anchor * 1e3,
                   pytorch_8b_ms=anchor * 1e3, speedup=1.0))
  print(markdown_table(rows))
  print("keep 0.4 stages (ms):", info["stages_keep_0.4_ms"])
  print("PyTorch 8B before / after ours (ms):", info["pytorch_8b_ms_before_after"])
  result = {"rows": rows, **info}
  print("written", write_results("sgl", rows, info))
  return result


if __name__ == "__main__":
  main()
