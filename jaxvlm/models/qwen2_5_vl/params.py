"""HF Qwen2.5-VL tensor names <-> our parameter paths.

Checkpoints name the decoder ``model.*`` + ``lm_head`` (published layout, also what
``transformers`` 5 writes) or ``model.language_model.*`` (transformers 4.5x); the vision tower
``visual.*`` or ``model.visual.*``. The first spelling of each is the one we write.
"""

from jaxvlm.models.llama import params as llama_params
from jaxvlm.models.weights import Rule


def _prefixed(hf_prefix: str, ours_prefix: str, rules) -> tuple[Rule, ...]:
  return tuple(Rule(hf_prefix + r.hf, tuple(ours_prefix + t for t in r.targets)) for r in rules)


_VISION = (
    Rule("patch_embed.proj.weight", "patch_embed.weight"),
    Rule("merger.mlp.0.weight", "merger.fc1.kernel"),
    Rule("merger.mlp.0.bias", "merger.fc1.bias"),
    Rule("merger.mlp.2.weight", "merger.fc2.kernel"),
    Rule("merger.mlp.2.bias", "merger.fc2.bias"),
    Rule("{p}.weight", "{p}.kernel"),
    Rule("{p}.weight", "{p}.weight"),
    Rule("{p}.bias", "{p}.bias"),
)
_DECODER = (
    Rule("embed_tokens.weight", "embed_tokens.embedding"),
    Rule("{p}.weight", "{p}.kernel"),
    Rule("{p}.weight", "{p}.weight"),
    Rule("{p}.bias", "{p}.bias"),
)

RULES = (
    Rule("lm_head.weight", "language_model.lm_head.kernel"),
    *_prefixed("visual.", "visual.", _VISION),
    *_prefixed("model.", "language_model.model.", _DECODER),
    *_prefixed("model.visual.", "visual.", _VISION),
    *_prefixed("model.language_model.", "language_model.model.", _DECODER),
)
IGNORE = llama_params.IGNORE
