"""HF CLIP vision tensor names <-> :class:`VisionTransformer` paths, and rule-building helpers
shared by the vision-language families."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from jaxvlm.models.weights import Rule


def module_rules(hf: str, ours: str, pairs: Iterable[tuple[str, str]]) -> list[Rule]:
  """Rules for renamed modules: ``hf + a.{weight,bias}`` <-> ``ours + b.{kernel|weight,bias}``."""
  out = []
  for a, b in pairs:
    out += [Rule(f"{hf}{a}.weight", f"{ours}{b}.kernel"),
            Rule(f"{hf}{a}.weight", f"{ours}{b}.weight"), Rule(f"{hf}{a}.bias", f"{ours}{b}.bias")]
  return out


def reshaped(hf: str, ours: str, hf_shape_prefix: tuple[int, ...]) -> Rule:
  """A tensor stored with extra leading unit dims (e.g. ``[1, 1, D]`` in the file, ``[D]`` here)."""
  return Rule(hf, ours, split=lambda t: (t.reshape(t.shape[len(hf_shape_prefix):]),),
              merge=lambda parts: parts[0].reshape(hf_shape_prefix + parts[0].shape))


def prefixed(rules: Sequence[Rule], hf: str, ours: str) -> list[Rule]:
  """``rules`` moved under ``hf`` / ``ours`` prefixes (a submodel inside a larger model)."""
  return [Rule(hf + r.hf, tuple(ours + t for t in r.targets), r.split, r.merge) for r in rules]


def split_rows(n: int, order: Sequence[int] | None = None):
  """(split, merge) for ``n`` equal blocks stacked along the first (output) dim; the parts are
  returned in ``order`` (block indices; default 0..n-1) and merged back from it."""
  order = list(range(n)) if order is None else list(order)
  inverse = np.argsort(order)

  def split(t):
    blocks = np.split(t, n, axis=0)
    return tuple(blocks[i] for i in order)

  return split, lambda parts: np.concatenate([parts[i] for i in inverse], axis=0)


_LAYER = "encoder.layers.{i}."
_OURS = "layers.{i}."

RULES = (
    Rule("embeddings.class_embedding", "embeddings.class_embedding"),
    Rule("embeddings.patch_embedding.weight", "embeddings.patch_embedding.weight"),
    Rule("embeddings.position_embedding.weight", "embeddings.position_embedding"),
    *module_rules("", "", [("pre_layrnorm", "pre_layernorm"),
                           ("post_layernorm", "post_layernorm")]),
    *module_rules(_LAYER, _OURS, [("self_attn.q_proj", "attn.q_proj"),
                                  ("self_attn.k_proj", "attn.k_proj"),
                                  ("self_attn.v_proj", "attn.v_proj"),
                                  ("self_attn.out_proj", "attn.o_proj"),
                                  ("layer_norm1", "norm1"), ("layer_norm2", "norm2"),
                                  ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")]),
)

IGNORE = (r".*embeddings\.position_ids$",)

# HF ``CLIPModel`` (model_type ``clip``) <-> :class:`~jaxvlm.models.clip.dual.CLIPModel`.
DUAL_RULES = (
    Rule("text_model.embeddings.token_embedding.weight", "text_model.token_embedding.embedding"),
    Rule("text_model.embeddings.position_embedding.weight", "text_model.position_embedding"),
    *module_rules("text_model.", "text_model.", [("final_layer_norm", "final_layer_norm")]),
    *prefixed([r for r in RULES if r.hf.startswith(_LAYER)], "text_model.", "text_model."),
    *prefixed(RULES, "vision_model.", "vision_model."),
    *module_rules("", "", [("text_projection", "text_projection"),
                           ("visual_projection", "visual_projection")]),
    Rule("logit_scale", "logit_scale"),
)
