"""Shared checks of the LLaVA-style VLMs (InternVL, LLaVA) against tiny random HF models."""

from __future__ import annotations

import jax
import numpy as np
import torch

from conftest import assert_rel_close
from jaxvlm.generation import generate
from jaxvlm.models import load_pretrained


def prompts(rng, image_token: int, tokens_per_row: list[int], vocab: int):
  """Left-padded batch: text, the row's placeholders, text (row lengths differ)."""
  text = lambda n: rng.integers(3, vocab - 10, size=n)
  rows = [np.concatenate([text(3 + r), np.full(n, image_token), text(4)])
          for r, n in enumerate(tokens_per_row)]
  length = max(len(r) for r in rows)
  ids = np.zeros((len(rows), length), np.int64)
  mask = np.zeros_like(ids)
  for i, r in enumerate(rows):
    ids[i, length - len(r):], mask[i, length - len(r):] = r, 1
  return ids, mask


def check_parity(hf, path, ids, mask, pixel_values, ref_features, *, new_tokens: int = 16):
  """Vision features, logits and every hidden state within 1e-4 relative; greedy ids identical."""
  model = load_pretrained(path)
  t_ids, t_mask, t_px = map(torch.tensor, (ids, mask, pixel_values))
  with torch.no_grad():
    ref = hf(input_ids=t_ids, attention_mask=t_mask, pixel_values=t_px, output_hidden_states=True)
  with jax.default_matmul_precision("highest"):
    feats = model.get_image_features(pixel_values)
    out = model(ids, mask, pixel_values=pixel_values, output_hidden_states=True)
  assert_rel_close(np.asarray(feats).reshape(-1), ref_features.reshape(-1), where="features")
  valid = mask.astype(bool)
  assert len(out.hidden_states) == len(ref.hidden_states)
  for i, (a, b) in enumerate(zip(out.hidden_states, ref.hidden_states)):
    assert_rel_close(np.asarray(a)[valid], b.numpy()[valid], where=f"hidden_states[{i}]")
  assert_rel_close(np.asarray(out.logits)[valid], ref.logits.numpy()[valid], where="logits")

  with torch.no_grad():
    ref_gen = hf.generate(input_ids=t_ids, attention_mask=t_mask, pixel_values=t_px,
                          max_new_tokens=new_tokens, do_sample=False, eos_token_id=None,
                          pad_token_id=0)
  with jax.default_matmul_precision("highest"):
    gen = generate(model, ids, mask, new_tokens, pixel_values=pixel_values, eos_token_id=())
  np.testing.assert_array_equal(np.asarray(gen.sequences), ref_gen.numpy())
  return model
