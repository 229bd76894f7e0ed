"""LoRA: only adapters train; merged export == adapter-on logits; PEFT round trip through torch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvlm.layers import lora
from jaxvlm.sharding import make_mesh
from training_helpers import make_trainer, tiny_llama

BASE = nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam))


def _randomize_b(model, seed=0):
  """Non-zero B so that adapters change the output (B starts at zero)."""
  key = jax.random.key(seed)
  for i, m in enumerate(lora.lora_modules(model).values()):
    m.lora_b[...] = 0.05 * jax.random.normal(jax.random.fold_in(key, i), m.lora_b.shape)


def test_apply_lora_selects_by_pattern():
  model = tiny_llama()
  names = lora.apply_lora(model, rank=4)
  assert sorted(names) == sorted(f"model.layers.{i}.self_attn.{p}_proj" for i in range(2)
                                 for p in "qkvo")
  assert lora.apply_lora(tiny_llama(), r"mlp\.(up|down)_proj$", rank=2) == [
      f"model.layers.{i}.mlp.{p}_proj" for i in range(2) for p in ("down", "up")]


def test_only_adapters_train_and_optimizer_holds_only_them():
  mesh = make_mesh({"data": 2, "fsdp": 4, "tensor": 1})
  model = tiny_llama(mesh)
  lora.apply_lora(model, rank=4, alpha=8.0, dropout=0.1)
  base_before = jax.tree.map(np.asarray, nnx.state(model, BASE))
  trainer = make_trainer(model, mesh=mesh, steps=3, trainable=nnx.LoRAParam)
  a_before = jax.tree.map(np.asarray, trainer.params)
  for batch, _ in zip(trainer.batches(0, 0), range(3)):
    trainer.train_step(batch)
  num_lora = 2 * 4 * 2  # layers x {q,k,v,o} x {A, B}
  assert len(jax.tree.leaves(trainer.params)) == num_lora
  assert {leaf.shape for leaf in jax.tree.leaves(trainer.opt_state) if leaf.ndim} <= {
      (32, 4), (4, 32), (4, 16)}
  changed = jax.tree.map(lambda a, b: not np.array_equal(np.asarray(a), b), trainer.params, a_before)
  assert all(jax.tree.leaves(changed))
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b),
               nnx.state(trainer.model, BASE), base_before)


def test_merge_gives_adapter_logits():
  model = tiny_llama()
  lora.apply_lora(model, rank=4, alpha=16.0)
  _randomize_b(model)
  ids = jnp.asarray(np.random.default_rng(0).integers(0, 64, (2, 9)))
  with jax.default_matmul_precision("highest"):
    plain = np.asarray(tiny_llama()(ids).logits)
    adapted = np.asarray(model(ids).logits)
    merged = np.asarray(lora.merge_lora(model)(ids).logits)
  assert not lora.lora_modules(model)
  assert np.abs(adapted - plain).max() > 1e-3
  np.testing.assert_allclose(merged, adapted, atol=2e-5, rtol=1e-5)


def test_peft_round_trip(tmp_path):
  import torch
  import transformers
  import peft
  from jaxvlm.models import load_pretrained
  torch.manual_seed(0)
  config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=2, num_attention_heads=4,
                                    num_key_value_heads=2, max_position_embeddings=64)
  hf = transformers.LlamaForCausalLM(config).eval()
  hf.save_pretrained(tmp_path / "base")
  model = load_pretrained(str(tmp_path / "base"))
  lora.apply_lora(model, rank=4, alpha=8.0, dropout=0.1)
  _randomize_b(model, seed=1)
  model.eval()
  lora.save_adapter(model, str(tmp_path / "adapter"), str(tmp_path / "base"))
  ids = np.random.default_rng(1).integers(0, 64, (2, 11))
  with jax.default_matmul_precision("highest"):
    ours = np.asarray(model(jnp.asarray(ids)).logits)
    reloaded = lora.load_adapter(load_pretrained(str(tmp_path / "base")), str(tmp_path / "adapter"))
    reloaded.eval()
    np.testing.assert_allclose(np.asarray(reloaded(jnp.asarray(ids)).logits), ours, atol=1e-5)
  peft_model = peft.PeftModel.from_pretrained(hf, str(tmp_path / "adapter")).eval()
  with torch.no_grad():
    theirs = peft_model(torch.tensor(ids)).logits.numpy()
  np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=1e-4)
