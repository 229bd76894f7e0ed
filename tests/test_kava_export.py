"""KAVA under LoRA with trainable special-token embedding rows: only those rows change, and the
trained adapter exports as a PEFT folder that ``transformers`` + ``peft`` load onto the base with
the same logits (the latent projection beside it reloads exactly)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxvlm import models
from jaxvlm.errors import ConfigError
from jaxvlm.layers import lora
from jaxvlm.methods import kava
from test_kava_core import TINY, random_batch, tiny_kava

# compile-bound (tiny shapes, eager ops): XLA's cheap compile mode (conftest)
pytestmark = pytest.mark.usefixtures("fast_compile")

SPECIAL = (90, 91, 92)  # <bot>, <eot>, latent of tiny_kava


@pytest.mark.parametrize("tied", [False, True])
def test_only_the_special_rows_train(rng, tied):
  lm = models.from_config(dict(TINY, tie_word_embeddings=tied), seed=0)
  lora.apply_lora(lm, rank=4, alpha=8.0, dropout=0.0)
  lora.train_rows(lm, SPECIAL)
  model = kava.KavaModel(lm, "mlp", *SPECIAL)
  before = np.asarray(model.lm.model.embed_tokens.base.embedding[...]).copy()
  graphdef, params, rest = nnx.split(model, nnx.Any(nnx.LoRAParam, kava.LatentParam), ...)
  loss_fn = kava.make_loss_fn(kava.KavaConfig(num_latents=3, iterations=2), prefix_len=2)
  batch = random_batch(rng)
  # one compile instead of op-by-op dispatch of the teacher and student passes and their grads
  grads = jax.jit(jax.grad(lambda p: loss_fn(nnx.merge(graphdef, p, rest), batch, None)[0]))(
      params)
  nnx.update(model, jax.tree.map(lambda p, g: p - 0.5 * g, params, grads))
  delta = np.asarray(model.lm.model.embed_tokens.delta[...])
  assert np.all(np.abs(delta).sum(-1) > 0)  # every special row received a gradient
  ids = jnp.asarray([[5, 90, 91, 92, 7]])
  with jax.default_matmul_precision("highest"):
    adapted = np.asarray(model.lm(ids).logits)
    lora.merge_lora(model.lm)
    merged = np.asarray(model.lm(ids).logits)
  after = np.asarray(model.lm.model.embed_tokens.embedding[...])
  changed = np.flatnonzero(np.abs(after - before).sum(-1))
  np.testing.assert_array_equal(changed, SPECIAL)  # the rest of the table stays frozen
  np.testing.assert_allclose(merged, adapted, atol=1e-5)
  with pytest.raises(ConfigError, match="lora.special_ids"):
    lora.train_rows(tiny_kava().lm, (5, 5))


def test_kava_adapter_loads_in_peft_with_the_same_logits(tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  peft = pytest.importorskip("peft")
  from jaxvlm.models import load_pretrained
  torch.manual_seed(0)
  hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(
      vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)).eval()
  hf.save_pretrained(tmp_path / "base")
  lm = load_pretrained(str(tmp_path / "base"))
  lora.apply_lora(lm, rank=4, alpha=8.0, dropout=0.0)
  lora.train_rows(lm, SPECIAL)
  model = kava.KavaModel(lm, "mlp", *SPECIAL)
  key = iter(jax.random.split(jax.random.key(1), 64))
  for _, v in nnx.iter_graph(model):  # a "trained" adapter: every trainable value random
    if isinstance(v, (nnx.LoRAParam, kava.LatentParam)):
      v[...] = 0.2 * jax.random.normal(next(key), v[...].shape)
  kava.save_adapter(model, str(tmp_path / "adapter"), str(tmp_path / "base"))
  ids = np.array([[1, 90, 92, 92, 91, 7, 8], [3, 4, 5, 90, 91, 2, 9]])
  batch = random_batch(np.random.default_rng(0))
  with jax.default_matmul_precision("highest"):
    ours = np.asarray(lm(jnp.asarray(ids)).logits)
    student = np.asarray(kava.student_forward(model, batch, 3, 2).logits)
    again = kava.load_adapter(load_pretrained(str(tmp_path / "base")), str(tmp_path / "adapter"))
    np.testing.assert_allclose(np.asarray(again.lm(jnp.asarray(ids)).logits), ours, atol=1e-5)
    np.testing.assert_allclose(np.asarray(kava.student_forward(again, batch, 3, 2).logits),
                               student, atol=1e-5)
  theirs = peft.PeftModel.from_pretrained(hf, str(tmp_path / "adapter")).eval()
  with torch.no_grad():
    np.testing.assert_allclose(theirs(torch.tensor(ids)).logits.numpy(), ours, atol=1e-4,
                               rtol=1e-4)
