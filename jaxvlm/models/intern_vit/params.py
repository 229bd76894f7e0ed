"""InternViT tensor names (original ``InternVisionModel`` and HF ``InternVLVisionModel``) <->
:class:`~jaxvlm.models.clip.modeling.VisionTransformer` paths."""

from __future__ import annotations

from jaxvlm.models.clip.params import module_rules, reshaped, split_rows
from jaxvlm.models.weights import Rule

# k first: ``export_tensors`` finds a packed rule by its first target (parameters in sorted order).
_QKV = ("layers.{i}.attn.k_proj", "layers.{i}.attn.q_proj", "layers.{i}.attn.v_proj")
_KQV = (1, 0, 2)  # blocks of the packed [q; k; v] rows, in _QKV order

# InternVL2 (``vision_model.`` inside ``InternVLChatModel``): packed qkv [q; k; v] rows.
ORIGINAL_RULES = (
    reshaped("embeddings.class_embedding", "embeddings.class_embedding", (1, 1)),
    reshaped("embeddings.position_embedding", "embeddings.position_embedding", (1,)),
    *module_rules("embeddings.", "embeddings.", [("patch_embedding", "patch_embedding")]),
    Rule("encoder.layers.{i}.attn.qkv.weight", tuple(p + ".kernel" for p in _QKV),
         *split_rows(3, _KQV)),
    Rule("encoder.layers.{i}.attn.qkv.bias", tuple(p + ".bias" for p in _QKV),
         *split_rows(3, _KQV)),
    Rule("encoder.layers.{i}.ls1", "layers.{i}.ls1"),
    Rule("encoder.layers.{i}.ls2", "layers.{i}.ls2"),
    *module_rules("encoder.layers.{i}.", "layers.{i}.", [
        ("attn.proj", "attn.o_proj"), ("attn.q_norm", "attn.q_norm"),
        ("attn.k_norm", "attn.k_norm"), ("norm1", "norm1"), ("norm2", "norm2"),
        ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")]),
)

# transformers ``InternVLVisionModel`` (``vision_tower.`` of ``InternVLForConditionalGeneration``).
HF_RULES = (
    reshaped("embeddings.cls_token", "embeddings.class_embedding", (1, 1)),
    reshaped("embeddings.position_embeddings", "embeddings.position_embedding", (1,)),
    *module_rules("embeddings.", "embeddings.",
                  [("patch_embeddings.projection", "patch_embedding")]),
    Rule("encoder.layer.{i}.lambda_1", "layers.{i}.ls1"),
    Rule("encoder.layer.{i}.lambda_2", "layers.{i}.ls2"),
    *module_rules("", "", [("layernorm", "post_layernorm")]),
    *module_rules("encoder.layer.{i}.", "layers.{i}.", [
        ("attention.q_proj", "attn.q_proj"), ("attention.k_proj", "attn.k_proj"),
        ("attention.v_proj", "attn.v_proj"), ("attention.projection_layer", "attn.o_proj"),
        ("attention.q_norm", "attn.q_norm"), ("attention.k_norm", "attn.k_norm"),
        ("layernorm_before", "norm1"), ("layernorm_after", "norm2"),
        ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")]),
)
