"""Loading a HF folder straight onto a mesh: shardings follow the logical rules, logits unchanged."""

import jax
import numpy as np
import pytest
import torch
import transformers
from jax.sharding import NamedSharding

from jaxvlm.models import load_pretrained
from jaxvlm.models.weights import flat_params
from jaxvlm.sharding import LOGICAL_RULES_FSDP, LOGICAL_RULES_TP, make_mesh


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  torch.manual_seed(0)
  cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128,
                                 num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=4)
  path = tmp_path_factory.mktemp("llama")
  transformers.LlamaForCausalLM(cfg).save_pretrained(path)
  return str(path)


@pytest.mark.parametrize("sizes,rules", [((1, 8, 1), LOGICAL_RULES_FSDP),
                                         ((2, 1, 4), LOGICAL_RULES_TP)])
def test_load_to_mesh(folder, sizes, rules):
  mesh = make_mesh(dict(zip(("data", "fsdp", "tensor"), sizes)))
  model = load_pretrained(folder, mesh=mesh, rules=rules)
  params = flat_params(model)
  q = params["model.layers.0.self_attn.q_proj.kernel"][...]
  down = params["model.layers.1.mlp.down_proj.kernel"][...]
  assert isinstance(q.sharding, NamedSharding)
  if rules is LOGICAL_RULES_FSDP:
    assert q.sharding.spec[0] == "fsdp" and down.sharding.spec[1] == "fsdp"
  else:
    assert q.sharding.spec[1] == "tensor" and down.sharding.spec[0] == "tensor"
  # every shard holds a slice, not a replica, of the sharded weight
  assert q.addressable_shards[0].data.size < q.size
  ids = np.random.default_rng().integers(0, 64, (2, 16))
  plain = load_pretrained(folder)
  with jax.default_matmul_precision("highest"):
    np.testing.assert_allclose(np.asarray(model(ids).logits), np.asarray(plain(ids).logits),
                               rtol=1e-5, atol=1e-5)
