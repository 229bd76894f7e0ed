"""Guide importance from attention maps vs NumPy; selection; bad prune settings name the field."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxvlm.errors import ConfigError
from jaxvlm.methods.sgl import importance as imp


def test_importance_and_selection_match_numpy():
  rng = np.random.default_rng()
  atts = [rng.random((2, 3, 10, 10)).astype(np.float32) for _ in range(2)]
  visual = np.zeros((2, 10), bool)
  visual[:, 2:6] = True
  query = np.zeros((2, 10), bool)
  query[:, 6:] = True
  got = np.asarray(imp.importance_from_attentions([jnp.asarray(a) for a in atts], query, visual))
  want = sum(a[:, :, 6:, 2:6].sum((1, 2)) for a in atts)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  idx = np.asarray(imp.select_visual(got, 0.5))
  np.testing.assert_array_equal(idx, np.sort(np.argsort(-want, 1)[:, :2], 1))
  assert imp.prune_layer_index(24, 0.5) == 12 and imp.num_kept(256, 0.09) == 23


@pytest.mark.parametrize("field, call", [("prune_ratio", lambda: imp.num_kept(10, 0.0)),
                                         ("prune_ratio", lambda: imp.num_kept(10, 1.5)),
                                         ("prune_layer", lambda: imp.prune_layer_index(8, 1.0)),
                                         ("prune_layer", lambda: imp.prune_layer_index(8, -0.1))])
def test_bad_prune_settings(field, call):
  with pytest.raises(ConfigError, match=field):
    call()
