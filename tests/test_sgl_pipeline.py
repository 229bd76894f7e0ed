"""SGL pipeline on tiny real-format InternVL2 folders (``internvl_chat``, BPE tokenizer with the
InternLM2 special tokens, the published template), images of mixed sizes so that rows have
different tile counts: map-free importance equals the attention-map sum; ragged importance and
selection equal per-sample runs; keep 1.0 answers as the unpruned decoder and the shared encoding
as each model encoding its own; the consistency score is the product of the teacher-forced token
probabilities; early exit with compaction leaves the other samples' answers unchanged."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvlm.data import synthetic_vqa
from jaxvlm.generation import generate
from jaxvlm.methods import sgl
from jaxvlm.methods.sgl import pipeline
from jaxvlm.models import multimodal as mm
from jaxvlm.models.chat import load_vlm
from jaxvlm.models.tiny import write_tiny_vlm_folder

# compile-bound (tiny shapes, eager ops): XLA's cheap compile mode (conftest)
pytestmark = pytest.mark.usefixtures("fast_compile")

SHORT = dict(max_new_tokens=3, guide_max_new_tokens=4)
SIZES = [(32, 32), (32, 80), (64, 32), (32, 32)]  # (height, width): 1, 3, 3, 1 tiles at max_num 2


def _samples():
  base = synthetic_vqa.make_vqa_split(len(SIZES), seed=5, question_types=("detail", "color"))
  rng = np.random.default_rng(0)
  return [dataclasses.replace(s, image=rng.integers(0, 255, (h, w, 3), np.uint8))
          for s, (h, w) in zip(base, SIZES)]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
  root = tmp_path_factory.mktemp("sgl")
  texts = [t for s in _samples() for t in (s.question, *s.answers)]
  folders = {}
  for name, width, layers, seed in (("decoder", 64, 2, 0), ("guide", 32, 1, 1)):
    folders[name] = write_tiny_vlm_folder(
        "internvl_chat", str(root / name), texts, seed=seed, select_layer=0,
        llm_config=dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers))
  decoder, dproc = load_vlm(folders["decoder"])
  guide, gproc = load_vlm(folders["guide"])
  guide = sgl.with_vision_tower(guide, decoder)
  gp, dp = sgl.Prompter(gproc, max_num=2), sgl.Prompter(dproc, max_num=2)
  return guide, decoder, gp, dp, _samples()


def _guide(guide, gp, samples, settings=sgl.SGLSettings(**SHORT)):
  batch = gp.batch(samples, [s.question for s in samples])
  image = pipeline.project(guide, pipeline.vision_features(guide, batch["pixel_values"]))
  return batch, image, sgl.guide_on_batch(guide, gp, batch, image, settings.guide_tokens(),
                                          settings.consistency_token_ratio)


def test_tiles_per_sample_of_a_mixed_size_batch(pair):
  _, decoder, gp, _, samples = pair
  batch = gp.batch(samples, [s.question for s in samples])
  per_tile = decoder.config.tokens_per_image
  assert batch["num_patches"].tolist() == [1, 3, 3, 1] == [gp.num_tiles(s) for s in samples]
  assert batch["pixel_values"].shape == (8, 3, 32, 32)
  counts = ((batch["input_ids"] == gp.image_token_id) & (batch["attention_mask"] > 0)).sum(1)
  assert counts.tolist() == [per_tile * t for t in (1, 3, 3, 1)] == batch["visual_tokens"].tolist()


def test_map_free_importance_equals_attention_maps(pair):
  guide, _, gp, _, samples = pair
  batch = gp.batch(samples, [s.question for s in samples])
  ids, mask = batch["input_ids"], batch["attention_mask"]
  visual = (ids == gp.image_token_id) & (mask > 0)
  query = (np.cumsum(visual, 1) == visual.sum(1, keepdims=True)) & ~visual & (mask > 0)
  px = jnp.asarray(batch["pixel_values"])
  with jax.default_matmul_precision("highest"):
    got = sgl.visual_importance(guide, ids, mask, query, visual, pixel_values=px)
    maps = guide(input_ids=ids, attention_mask=mask, pixel_values=px,
                 output_attentions=True).attentions
  mass = sum(np.einsum("bhqk,bq->bk", np.asarray(a, np.float64), query) for a in maps)
  for b in range(len(samples)):
    n = visual[b].sum()
    np.testing.assert_allclose(np.asarray(got)[b, :n], mass[b][visual[b]], rtol=1e-4)
    assert (np.asarray(got)[b, n:] == 0).all()


def test_ragged_importance_and_selection_equal_per_sample_runs(pair):
  guide, _, gp, _, samples = pair
  with jax.default_matmul_precision("highest"):
    _, _, together = _guide(guide, gp, samples)
    alone = [_guide(guide, gp, [s])[2] for s in samples]
  imp = np.asarray(together["importance"])
  for ratio in (0.4, 0.09):
    keep = np.asarray(sgl.select_keep(together["importance"], together["counts"], ratio))
    for b, one in enumerate(alone):
      n = int(one["counts"][0])
      assert together["counts"][b] == n
      np.testing.assert_allclose(imp[b, :n], np.asarray(one["importance"])[0], rtol=1e-4,
                                 atol=1e-7)
      own = np.asarray(sgl.select_keep(one["importance"], one["counts"], ratio))[0]
      np.testing.assert_array_equal(keep[b, :n], own)
      assert keep[b].sum() == int(n * ratio) and not keep[b, n:].any()
      want = np.zeros(n, bool)
      want[np.argsort(-np.asarray(one["importance"])[0], kind="stable")[:int(n * ratio)]] = True
      np.testing.assert_array_equal(own, want)
    np.testing.assert_allclose(together["confidence"], [o["confidence"][0] for o in alone],
                               rtol=1e-4)


def test_kept_positions_equal_keep_visual_tokens(pair):
  _, _, gp, _, samples = pair
  batch = gp.batch(samples, [s.question for s in samples])
  ids, mask = batch["input_ids"], batch["attention_mask"]
  counts = ((ids == gp.image_token_id) & (mask > 0)).sum(1)
  rng = np.random.default_rng()
  keep = np.zeros((len(samples), counts.max()), bool)
  for b, n in enumerate(counts):
    keep[b, rng.permutation(n)[:int(n * 0.4)]] = True
  want = mm.keep_visual_tokens(ids, mask, gp.image_token_id, keep).kept_index
  length = sgl.importance.pruned_length(ids, mask, gp.image_token_id, keep.sum(1))
  got = sgl.kept_positions(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(keep),
                           image_token_id=gp.image_token_id, length=length)
  np.testing.assert_array_equal(np.asarray(got), want)


def test_consistency_is_the_product_of_token_probs(pair):
  guide, _, gp, _, samples = pair
  ratio = 0.25
  batch, image, out = _guide(guide, gp, samples, sgl.SGLSettings(
      consistency_token_ratio=ratio, **SHORT))
  new, num = out["new_tokens"], out["num_generated"]
  keep = np.asarray(sgl.select_keep(out["importance"], out["counts"], ratio))
  p = batch["input_ids"].shape[1]
  for b in range(len(samples)):  # by hand: drop the other visual tokens from the sequence
    row_ids = np.concatenate([batch["input_ids"][b], new[b, :num[b]]])
    row_mask = np.concatenate([batch["attention_mask"][b], np.ones(num[b], int)]) > 0
    visual = (row_ids == gp.image_token_id) & row_mask
    visual[p:] = False
    kept_visual = np.zeros_like(visual)
    kept_visual[np.nonzero(visual)[0][keep[b, :visual.sum()]]] = True
    keep_cols = row_mask & (~visual | kept_visual)
    pos = np.nonzero(keep_cols)[0]
    full = pipeline._embed(guide, jnp.asarray(batch["input_ids"]), jnp.asarray(new), image)
    positions = np.cumsum(row_mask) - 1
    with jax.default_matmul_precision("highest"):
      logits = guide.language_model(
          inputs_embeds=full[b:b + 1, pos], attention_mask=jnp.ones((1, len(pos)), jnp.int32),
          position_ids=jnp.asarray(positions[pos][None])).logits[0]
    logp = np.asarray(jax.nn.log_softmax(logits, -1))
    where = {c: i for i, c in enumerate(pos)}
    probs = [np.exp(logp[where[p - 1 + t], new[b, t]]) for t in range(num[b])]
    np.testing.assert_allclose(out["consistency"][b], np.prod(probs), rtol=2e-3)
  np.testing.assert_allclose(out["score"], (out["confidence"] + out["consistency"]) / 2)


def test_keep_all_and_shared_encoding_equal_plain_runs(pair):
  guide, decoder, gp, dp, samples = pair
  s = sgl.SGLSettings(prune_ratio=1.0, **SHORT)
  shared = sgl.guided_batch(guide, decoder, gp, dp, samples, s, shared=True)
  own = sgl.guided_batch(guide, decoder, gp, dp, samples, s, shared=False)
  batch = dp.batch(samples, [x.question for x in samples])
  plain = generate(decoder, batch["input_ids"], batch["attention_mask"], 3, temperature=0.0,
                   eos_token_id=dp.eos_token_id, pad_token_id=dp.pad_token_id, min_new_tokens=1,
                   pixel_values=jnp.asarray(batch["pixel_values"])).new_tokens
  assert [r["large_answer"] for r in shared] == [r["large_answer"] for r in own] == [
      dp.decode(r) for r in np.asarray(plain)]
  for a, b in zip(shared, own):
    np.testing.assert_allclose(a["distribution"], b["distribution"], rtol=1e-5)
  assert set(shared[0]["seconds"]) >= {"preprocess", "vision", "guide_generation", "importance",
                                       "consistency", "selection", "decoder"}


def test_early_exit_with_compaction_keeps_the_other_answers(pair):
  guide, decoder, gp, dp, samples = pair
  s = sgl.SGLSettings(prune_ratio=0.4, **SHORT)
  base = sgl.guided_batch(guide, decoder, gp, dp, samples, s, shared=True)
  scores = sorted(r["score"] for r in base)
  threshold = (scores[1] + scores[2]) / 2  # the two best-scoring samples exit
  exits = sgl.guided_batch(guide, decoder, gp, dp, samples,
                           dataclasses.replace(s, early_exit_threshold=threshold), shared=True)
  assert sum(r["exited"] for r in exits) == 2
  for a, b in zip(base, exits):
    if b["exited"]:
      assert b["prediction"] == b["small_answer"] and b["large_answer"] == ""
    else:
      assert b["large_answer"] == a["large_answer"] and b["prediction"] == a["large_answer"]
  everyone = sgl.guided_batch(guide, decoder, gp, dp, samples,
                              dataclasses.replace(s, early_exit_threshold=1e-9), shared=True)
  assert all(r["exited"] and r["large_answer"] == "" for r in everyone)
  assert "decoder" not in everyone[0]["seconds"]  # the decoder did not run


def test_random_selection_keeps_as_many_tokens(pair):
  guide, decoder, gp, dp, samples = pair
  s = sgl.SGLSettings(prune_ratio=0.09, selection="random", **SHORT)
  rows = sgl.guided_batch(guide, decoder, gp, dp, samples, s, shared=True, step=3)
  assert [r["num_kept"] for r in rows] == [int(r["num_visual"] * 0.09) for r in rows]
  assert all(0 < r["score"] <= 1 for r in rows)
