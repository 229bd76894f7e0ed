"""SGL pipeline on tiny random internvl_chat models: map-free importance equals the attention-map
sum; shared vision is checked on the weights; keep 1.0 answers as the unpruned large model and
the shared encoding as each model encoding its own; early-exit scores against a direct forward;
bad settings and a guide tokenizer unlike the decoder's name the field."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvlm import models
from jaxvlm.data import vlm_batches
from jaxvlm.data.tokenizer import CharTokenizer
from jaxvlm.errors import ConfigError, ShapeError
from jaxvlm.generation import generate
from jaxvlm.methods import sgl
from jaxvlm.training import vlm

import ml_collections

DATA = ml_collections.ConfigDict(dict(image_size=32, grid=4, max_objects=3, label_seed=0,
                                      question_types=("color", "shape", "count", "position")))
SHORT = dict(max_new_tokens=3, guide_max_new_tokens=4)


@pytest.fixture(scope="module")
def pair():
  hf = lambda width, layers: vlm.tiny_vlm_config("internvl_chat", select_layer=0, llm_config=dict(
      hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers))
  decoder = models.from_config(hf(64, 2), seed=0)
  guide = sgl.with_vision_tower(models.from_config(hf(32, 1), seed=1), decoder)
  tok = vlm_batches.vlm_tokenizer()
  samples = vlm.synthetic_split(DATA, 3, seed=5)
  return guide, decoder, sgl.SyntheticPrompter(guide, tok), sgl.SyntheticPrompter(decoder, tok), \
      samples


def test_map_free_importance_equals_attention_maps(pair):
  guide, _, gp, _, samples = pair
  batch = gp.batch(samples, [s.question for s in samples])
  ids, mask = batch["input_ids"], batch["attention_mask"]
  visual = ids == gp.image_token_id
  query = (np.cumsum(visual, 1) == visual.sum(1, keepdims=True)) & ~visual & (mask > 0)
  px = jnp.asarray(batch["pixel_values"])
  with jax.default_matmul_precision("highest"):
    got = sgl.visual_importance(guide, ids, mask, query, visual, pixel_values=px)
    maps = guide(input_ids=ids, attention_mask=mask, pixel_values=px,
                 output_attentions=True).attentions
  want = sgl.importance_from_attentions(maps, query, visual)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4)
  assert got.shape == (3, gp.num_visual(samples[0]))


def test_importance_on_the_generation_cache_equals_a_full_teacher_forced_pass(pair):
  guide, _, gp, _, samples = pair
  batch = gp.batch(samples, [s.question for s in samples])
  image = sgl.pipeline.project(guide, sgl.pipeline.vision_features(guide, batch["pixel_values"]))
  out = generate(guide, batch["input_ids"], batch["attention_mask"], 5, temperature=0.0,
                 eos_token_id=2, pad_token_id=0, image_features=image, return_cache=True)
  new, num = np.asarray(out.new_tokens), np.asarray(out.num_generated)
  markers, mask, query = sgl.pipeline._with_generated(batch, new, num, gp.image_token_id)
  visual = (markers == gp.image_token_id) & (mask > 0)
  ids = np.concatenate([batch["input_ids"], new], 1)
  embeds = sgl.pipeline._embed(guide, jnp.asarray(batch["input_ids"]), jnp.asarray(new), image)
  with jax.default_matmul_precision("highest"):
    full = sgl.visual_importance(guide, ids, mask, query, visual, inputs_embeds=embeds)
    cached = sgl.visual_importance(guide, ids, mask, query, visual, cache=out.cache,
                                   inputs_embeds=embeds)
  assert len(set(batch["attention_mask"].sum(1))) > 1  # ragged, left-padded prompts
  np.testing.assert_allclose(np.asarray(cached), np.asarray(full), rtol=1e-4, atol=1e-6)
  with pytest.raises(ShapeError, match="inputs_embeds"):  # the suffix holds visual columns
    sgl.visual_importance(guide, ids, mask, query, visual, cache=out.cache)


def test_shared_vision_is_checked_on_weights(pair):
  guide, decoder, *_ = pair
  assert sgl.shares_vision(guide, decoder)
  other = models.from_config(vlm.tiny_vlm_config("internvl_chat", select_layer=0), seed=3)
  assert not sgl.shares_vision(other, decoder)
  assert sgl.shares_vision(sgl.with_vision_tower(other, decoder), decoder)  # same tower, other LM


def test_keep_all_and_shared_encoding_equal_plain_runs(pair):
  guide, decoder, gp, dp, samples = pair
  s = sgl.SGLSettings(prune_ratio=1.0, **SHORT)
  shared = sgl.guided_batch(guide, decoder, gp, dp, samples, s, shared=True)
  own = sgl.guided_batch(guide, decoder, gp, dp, samples, s, shared=False)
  batch = dp.batch(samples, [x.question for x in samples])
  plain = generate(decoder, batch["input_ids"], batch["attention_mask"], 3, temperature=0.0,
                   eos_token_id=2, pad_token_id=0,
                   pixel_values=jnp.asarray(batch["pixel_values"])).new_tokens
  assert [r["large_answer"] for r in shared] == [r["large_answer"] for r in own] == [
      dp.decode(r) for r in np.asarray(plain)]
  for a, b in zip(shared, own):
    np.testing.assert_allclose(a["distribution"], b["distribution"], rtol=1e-5)
  pruned = sgl.guided_batch(guide, decoder, gp, dp, samples,
                            dataclasses.replace(s, prune_ratio=0.09, selection="random"),
                            shared=True)
  assert {r["num_kept"] for r in pruned} == {1} and all(0 < r["score"] <= 1 for r in pruned)
  exits = sgl.guided_batch(guide, decoder, gp, dp, samples,
                           dataclasses.replace(s, early_exit_threshold=1e-9), shared=True)
  assert all(r["exited"] and r["prediction"] == r["small_answer"] and r["large_answer"] == ""
             for r in exits)  # every sample exits: the large model does not run


def test_confidence_is_geometric_mean_of_token_probs(pair):
  guide, _, gp, _, samples = pair
  s = sgl.SGLSettings(**SHORT)
  pixels = gp.batch(samples, [x.question for x in samples])["pixel_values"]
  out = sgl.guide_pass(guide, gp, samples, s, sgl.pipeline.project(
      guide, sgl.pipeline.vision_features(guide, pixels)))
  batch = gp.batch(samples, [x.question for x in samples])
  new = out["new_tokens"]
  seq = np.concatenate([batch["input_ids"], new], 1)
  logits = guide(input_ids=seq, attention_mask=np.ones_like(seq) * np.concatenate(
      [batch["attention_mask"], np.ones_like(new)], 1),
      pixel_values=jnp.asarray(pixels)).logits
  logp = np.asarray(jax.nn.log_softmax(logits, -1))
  p = batch["input_ids"].shape[1]
  for b in range(len(samples)):
    n = next((i + 1 for i, t in enumerate(new[b]) if t == 2), new.shape[1])
    want = np.exp(np.mean([logp[b, p - 1 + t, new[b, t]] for t in range(n)]))
    np.testing.assert_allclose(out["confidence"][b], want, rtol=1e-4)


@pytest.mark.parametrize("field, value", [("prune_ratio", 0.0), ("prune_ratio", 1.5),
                                          ("prune_layer", 1.0), ("prune_layer", -0.1),
                                          ("consistency_token_ratio", 0.0),
                                          ("guide_reasoning_mode", "long_cot"),
                                          ("reasoning_mode", "three_pass")])
def test_bad_settings_name_the_field(field, value):
  with pytest.raises(ConfigError, match=field):
    sgl.SGLSettings(**{field: value})


def test_guide_tokenizer_must_match_where_the_mode_needs_it():
  same, other = vlm_batches.vlm_tokenizer(), CharTokenizer(extra_tokens=("<img>",))
  sgl.check_tokenizers(sgl.SGLSettings(guide_text_mode="short_rationale"), same,
                       vlm_batches.vlm_tokenizer())
  sgl.check_tokenizers(sgl.SGLSettings(), other, same)  # baseline: only visual tokens pass over
  with pytest.raises(ConfigError, match="guide_tokenizer"):
    sgl.check_tokenizers(sgl.SGLSettings(guide_text_mode="short_rationale"), other, same)
