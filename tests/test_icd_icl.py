"""ICD ICL inference: the interleaved multi-image prompt equals the Qwen2.5-VL forward on the HF
processor layout (logits, greedy tokens, answer probabilities), results in the layout
``jaxvlm compare-indices`` reads, the synthetic ICL episodes, and bad input."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
import transformers
from ml_collections import ConfigDict

from jaxvlm.config import load_config
from jaxvlm.data import vlm_batches
from jaxvlm.errors import ConfigError, JaxVLMError, ShapeError
from jaxvlm.generation import generate
from jaxvlm.methods import icd
from jaxvlm.methods.icd import icl
from jaxvlm.models import load_pretrained
from jaxvlm.run import experiment_module
from jaxvlm.tools import compare_indices
from jaxvlm.training.vlm import tiny_vlm_config

DATA = ConfigDict(dict(image_size=32, grid=4, max_objects=3, label_by="shape", word_pool=8,
                       num_train=40, train_seed=0, label_seed=0, max_shots=3,
                       same_class_prob=1.0))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  cfg = tiny_vlm_config("qwen2_5_vl")
  torch.manual_seed(0)
  hf = transformers.Qwen2_5_VLForConditionalGeneration(transformers.Qwen2_5_VLConfig(
      **{k: v for k, v in cfg.items() if k not in ("model_type", "architectures")})).eval()
  path = str(tmp_path_factory.mktemp("qwen_icl"))
  hf.save_pretrained(path)
  samples = icl.label_split(DATA, 6, seed=3, label_seed=1)
  return hf, load_pretrained(path), vlm_batches.vlm_tokenizer(), samples


def _hf_layout(hf, tok, rows):
  """Left-padded ids with ``<|image_pad|>`` expanded by the HF image processor's grids, pixel
  values and grids from ``Qwen2VLImageProcessor`` (rows: ``(query, [demos])``)."""
  v = hf.config.vision_config
  proc = transformers.Qwen2VLImageProcessor(patch_size=v.patch_size, merge_size=2,
                                            temporal_patch_size=v.temporal_patch_size,
                                            min_pixels=32 * 32, max_pixels=32 * 32)
  images = [s.image for q, demos in rows for s in [*demos, q]]
  px = proc(images=images, return_tensors="np")
  grids = iter(px["image_grid_thw"])
  start, img, end = (tok.token_id(t) for t in ("<vision_start>", "<image>", "<vision_end>"))
  seqs = []
  for q, demos in rows:
    ids = [tok.bos_token_id]
    for s, text in [*((d, f"{d.question}\n{d.answer}\n") for d in demos), (q, f"{q.question}\n")]:
      ids += [start] + [img] * (int(np.prod(next(grids))) // 4) + [end] + tok.encode(text)
    seqs.append(ids)
  length = max(map(len, seqs))
  ids = np.zeros((len(seqs), length), np.int64)
  for i, s in enumerate(seqs):
    ids[i, length - len(s):] = s
  return ids, (ids != 0).astype(np.int64), px["pixel_values"], px["image_grid_thw"], img


def test_one_shot_prompt_logits_and_greedy_match_hf(setup):
  hf, model, tok, samples = setup
  rows = [(samples[0], [samples[1]]), (samples[2], [samples[3]])]
  batch = vlm_batches.build_vlm_batch([q for q, _ in rows], tok, model,
                                      shots=[d for _, d in rows], with_answer=False)
  ids, mask, px, grid, img = _hf_layout(hf, tok, rows)
  assert mask.sum(1).min() < ids.shape[1]  # the rows differ in length: real left padding
  np.testing.assert_array_equal(batch["input_ids"], ids)
  t = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask),
       "pixel_values": torch.tensor(px), "image_grid_thw": torch.tensor(grid),
       "mm_token_type_ids": torch.tensor((ids == img).astype(np.int64))}
  with torch.no_grad():
    ref = hf(**t).logits.numpy()
    ref_gen = hf.generate(**t, max_new_tokens=4, min_new_tokens=4, do_sample=False).numpy()
  with jax.default_matmul_precision("highest"):
    ours = np.asarray(model(**vlm_batches.model_inputs(model, batch)).logits)
    gen = generate(model, batch["input_ids"], batch["attention_mask"], 4, eos_token_id=(),
                   **vlm_batches.generation_inputs(model, batch))
  valid = mask.astype(bool)
  err = np.abs(ours[valid] - ref[valid]).max() / np.abs(ref[valid]).max()
  assert err < 1e-4, err
  np.testing.assert_array_equal(np.asarray(gen.sequences), ref_gen)


def test_answer_prob_fn_matches_hf_and_beam_search(setup):
  hf, model, tok, samples = setup
  queries, pool = samples[:3], samples[3:]
  prob_fn = icl.answer_prob_fn(model, tok, queries, pool, batch_size=2)
  rows, idx = np.array([0, 1, 2]), np.array([[0], [2], [1]])
  with jax.default_matmul_precision("highest"):
    probs = prob_fn(rows, idx)
  for r, i, p in zip(rows, idx, probs):
    q, d = queries[r], pool[int(i[0])]
    b = vlm_batches.build_vlm_batch([q], tok, model, shots=[[d]])
    ids, m, px, grid, img = _hf_layout(hf, tok, [(q, [d])])
    full = np.concatenate([ids, b["input_ids"][:, ids.shape[1]:]], 1)
    with torch.no_grad():
      logits = hf(input_ids=torch.tensor(full), pixel_values=torch.tensor(px),
                  image_grid_thw=torch.tensor(grid),
                  mm_token_type_ids=torch.tensor((full == img).astype(np.int64))).logits
    logp = torch.log_softmax(logits[0, :-1].double(), -1).numpy()
    ans = np.nonzero(b["loss_mask"][0])[0]
    assert p == pytest.approx(np.exp(logp[ans - 1, full[0, ans]].sum()), rel=1e-3)
  beams = icd.beam_search(prob_fn, rows, np.array([[0, 1, 2]] * 3), 1, beam_size=1)
  with jax.default_matmul_precision("highest"):
    one = prob_fn(np.repeat(rows, 3), np.tile(np.arange(3), 3)[:, None]).reshape(3, 3)
  assert [b["beams"][0][0] for b in beams] == one.argmax(1).tolist()


def test_icl_results_in_compare_indices_layout(setup, tmp_path):
  _, model, tok, samples = setup
  queries, pool = samples[:2], samples[2:]
  idx = {1: np.array([[0], [3]]), 2: np.array([[1, 0], [2, 3]])}
  results = {s: icl.icl_inference(model, tok, queries, pool, i, batch_size=2, max_new_tokens=3)
             for s, i in idx.items()}
  metrics = icl.write_icl_results(str(tmp_path), queries, results, idx, {"selection": "x"})
  assert set(metrics["shots"]) == {"1", "2"} and metrics["selection"] == "x"
  for s, i in idx.items():
    sel = compare_indices.load_selections(icl.predictions_path(str(tmp_path), s))
    assert sel == {str(q.question_id): row.tolist() for q, row in zip(queries, i)}
    r = results[s]
    assert 0.0 <= r["accuracy"] <= 1.0 and len(r["predictions"]) == 2
    assert r["accuracy"] == pytest.approx(np.mean(r["scores"]))
  reward = icl.reward_fn(model, tok, queries, pool, batch_size=2, max_new_tokens=3)(
      np.array([1, 0]), idx[2][::-1])
  np.testing.assert_allclose(reward, [e + a for e, a in zip(results[2]["exact"][::-1],
                                                            results[2]["scores"][::-1])])


def test_episodes_hold_a_same_class_demo_and_are_seeded(setup):
  _, model, tok, _ = setup
  c = ConfigDict(dict(data=DATA, train=dict(batch_size=3)))
  factory = icl.episode_batch_factory(c, tok, model)
  first, second = next(factory(0, 0)), next(factory(0, 1))
  again = next(factory(0, 1))
  for k in second:
    np.testing.assert_array_equal(second[k], again[k])
  assert first["pixel_values"].shape[1] == 2 and second["pixel_values"].shape[1] == 3
  for row, loss in zip(second["input_ids"], second["loss_mask"].astype(bool)):
    text = (row > 2) & (row < tok.token_id("<image>"))
    lines = tok.decode(row[text & ~loss].tolist()).strip().split("\n")
    answer = tok.decode(row[text & loss].tolist())
    query, demos = lines[-1], dict(zip(lines[0:-1:2], lines[1:-1:2]))
    assert demos.get(query) == answer  # the same-class demo holds the episode's word


def test_bad_input_names_the_field(setup):
  _, model, tok, samples = setup
  with pytest.raises(ConfigError, match="shots"):
    icl.check_icd_indices(np.zeros((2, 0), int), 2, 4)
  with pytest.raises(ConfigError, match="shots"):
    icl.check_icd_indices(np.zeros((2, 5), int), 2, 4)
  with pytest.raises(ConfigError, match="icd_indices"):
    icl.check_icd_indices(np.array([[0], [4]]), 2, 4)
  with pytest.raises(ShapeError, match="icd_indices"):
    icl.icl_inference(model, tok, samples[:2], samples[2:], np.zeros((3, 1), int))
  check = experiment_module("kl_beta_compare").check_config
  for key, value, field in (("compare.kl_betas", "(0.12,-0.1)", "kl_beta"),
                            ("compare.shots", "(1,17)", "shots"),
                            ("compare.shots", "(0,1)", "shots"),
                            ("compare.epochs", "(3,99)", "compare.epochs"),
                            ("compare.index_shots", "0", "shots")):
    c = load_config("configs/icd.py:tiny", [f"{key}={value}"])
    with pytest.raises(JaxVLMError, match=field):
      check(c)
  check(load_config("configs/icd.py:tiny"))


def test_word_pool_mappings_reassign_few_words():
  from jaxvlm.data import synthetic_vqa
  words = set(synthetic_vqa.label_words(8))
  maps = [synthetic_vqa.label_mapping(seed, "shape", 8) for seed in range(20)]
  assert all(set(m.values()) <= words and len(set(m.values())) == 5 for m in maps)
  assert len({tuple(m.values()) for m in maps}) > 10
  assert synthetic_vqa.label_mapping(3) == synthetic_vqa.label_mapping(3, "shape", 0)
  with pytest.raises(ConfigError, match="word_pool"):
    synthetic_vqa.label_mapping(0, "shape", 4)


def _char_level_hf_tokenizer():
  """A HF fast tokenizer with the char tokenizer's ids, Qwen-style specials and no BOS."""
  from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
  from jaxvlm.data.tokenizer import ALPHABET
  vocab = {"<|endoftext|>": 0, "<bos>": 1, "<|im_end|>": 2,
           **{ch: i + 3 for i, ch in enumerate(ALPHABET)},
           "<|image_pad|>": 99, "<|vision_start|>": 100, "<|vision_end|>": 101}
  tk = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
  tk.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
  tk.decoder = decoders.Fuse()
  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
      additional_special_tokens=["<|image_pad|>", "<|vision_start|>", "<|vision_end|>"])


def test_hf_checkpoint_folder_with_its_tokenizer(setup, tmp_path):
  """``vlm.path``: the model and the folder's HF tokenizer give the char tokenizer's prompts
  (BOS = the pad token when the tokenizer has none) and one-line answers."""
  hf, _, tok, samples = setup
  hf.save_pretrained(str(tmp_path))
  _char_level_hf_tokenizer().save_pretrained(str(tmp_path))
  c = load_config("configs/icd.py:tiny", [f"vlm.path={tmp_path}"])
  model, adapter = experiment_module("kl_beta_compare").load_vlm(c, str(tmp_path / "run"))
  assert isinstance(adapter, icd.HFTextTokenizer) and adapter.bos_token_id == 0
  fmt = vlm_batches.VLMPromptFormat.from_model(model, adapter)
  ids, _ = vlm_batches.encode_prompt(fmt, adapter, samples[0], [samples[1]])
  ref, _ = vlm_batches.encode_prompt(vlm_batches.VLMPromptFormat.from_model(model, tok), tok,
                                     samples[0], [samples[1]])
  assert ids[0] == 0 and ids[1:] == ref[1:]
  assert adapter.decode(tok.encode("ab c\nwhat") + [2, 0]) == "ab c"
  r = icl.icl_inference(model, adapter, samples[:2], samples[2:], np.array([[0], [1]]),
                        batch_size=2, max_new_tokens=3)
  assert all(isinstance(p, str) and "\n" not in p for p in r["predictions"])
