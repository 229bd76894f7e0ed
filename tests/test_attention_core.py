"""The attention core's cuDNN even-length padding keeps every real row's attention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvlm.layers.attention import attention, pad_even


@pytest.mark.parametrize("sq,sk", [(7, 9), (8, 9), (7, 8), (8, 8)])
def test_pad_even_leaves_real_rows_and_gradients_unchanged(sq, sk):
  rng = np.random.default_rng()
  q = jnp.asarray(rng.standard_normal((2, sq, 4, 8)), jnp.float32)
  k, v = (jnp.asarray(rng.standard_normal((2, sk, 2, 8)), jnp.float32) for _ in range(2))
  mask = rng.random((2, 1, sq, sk)) < 0.6
  mask[..., 0] = True  # every query sees at least one key
  mask = jnp.asarray(mask)

  def loss(q, k, v, pad):
    args = pad_even(q, k, v, mask) if pad else (q, k, v, mask)
    out = attention(*args, implementation="xla")[0][:, :sq]
    return jnp.sum(out * jnp.arange(out.size, dtype=out.dtype).reshape(out.shape) / out.size), out

  padded = pad_even(q, k, v, mask)
  assert all(x.shape[1] % 2 == 0 for x in padded[:3]) and padded[3].shape[2:] == (
      sq + sq % 2, sk + sk % 2)
  (_, ref), g_ref = jax.value_and_grad(loss, (0, 1, 2), has_aux=True)(q, k, v, False)
  (_, out), g_out = jax.value_and_grad(loss, (0, 1, 2), has_aux=True)(q, k, v, True)
  np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
  for a, b in zip(g_out, g_ref):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs a GPU")
def test_cudnn_masked_odd_lengths_train_like_xla():
  """cuDNN refuses a masked backward at odd lengths (Q 153, KV 170 in the KAVA student pass)."""
  rng = np.random.default_rng()
  q = jnp.asarray(rng.standard_normal((2, 153, 8, 64)), jnp.bfloat16)
  k, v = (jnp.asarray(rng.standard_normal((2, 170, 2, 64)), jnp.bfloat16) for _ in range(2))
  mask = jnp.asarray(np.tril(np.ones((153, 170), bool), k=17)[None, None])

  def loss(q, k, v, impl):
    return jnp.sum(attention(q, k, v, mask, implementation=impl)[0].astype(jnp.float32) ** 2)

  ref = jax.grad(loss, (0, 1, 2))(q, k, v, "xla")
  got = jax.jit(jax.grad(loss, (0, 1, 2)), static_argnums=3)(q, k, v, "cudnn")
  for a, b in zip(got, ref):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    assert np.linalg.norm(a - b) / np.linalg.norm(b) < 2e-2
