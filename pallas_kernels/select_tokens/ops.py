"""Public token selection: exact top-k, per-row (ragged) k and threshold variants."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.errors import ConfigError, ShapeError
from pallas_kernels import backend
from pallas_kernels.select_tokens import mosaic_tpu, triton
from pallas_kernels.select_tokens.reference import (TokenSelection, gather_rows,
                                                    select_tokens_reference)

AVAILABLE = ("mosaic_tpu", "triton", "xla")


def select_tokens(scores: jax.Array, features: jax.Array, k: int | jax.Array, *,
                  max_k: int | None = None, implementation: str | None = None,
                  interpret: bool | None = None, **tuning) -> TokenSelection:
  """Keep the top ``k`` tokens of each row (meaning: ``reference.select_tokens_reference``).

  ``scores [B, N]``, ``features [B, N, D]``; ``k`` an int (every row keeps exactly ``k``;
  ``max_k`` defaults to it) or an int ``[B]`` array of per-row budgets clipped to
  ``[0, max_k]`` (``max_k`` static, required). ``implementation``: None (by platform),
  ``"mosaic_tpu"``, ``"triton"`` or ``"xla"``. ``tuning``: keywords of ``triton.select``
  (``fused=True`` and the chosen kernel's block sizes / warps / ``radix_bits``); triton only.
  """
  if scores.ndim != 2 or features.ndim != 3 or features.shape[:2] != scores.shape:
    raise ShapeError("scores/features", (scores.shape, features.shape), "[B, N] and [B, N, D]")
  b, n = scores.shape
  if isinstance(k, (int, np.integer)):
    k = int(k)
    if not 0 <= k <= n:
      raise ConfigError("k", k, f"an int in [0, {n}]")
    max_k = k if max_k is None else max_k
  elif max_k is None:
    raise ConfigError("max_k", None, "a static int when k is an array")
  if not 0 <= max_k <= n:
    raise ConfigError("max_k", max_k, f"an int in [0, {n}]")
  counts = jnp.clip(jnp.broadcast_to(jnp.asarray(k, jnp.int32), (b,)), 0, max_k)
  impl = backend.resolve(implementation, AVAILABLE)
  if tuning and impl != "triton":
    raise ConfigError("tuning", tuning, "no keyword options unless implementation='triton'")
  if impl == "xla" or max_k == 0:
    return select_tokens_reference(scores, features, counts, max_k)
  interp = backend.interpret_default(impl) if interpret is None else interpret
  return _select(scores, features, counts, max_k, impl, interp, tuple(sorted(tuning.items())))


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6))
def _select(scores, features, counts, max_k: int, impl: str, interpret: bool,
            tuning: tuple) -> TokenSelection:
  """The kernel call, jit-compiled: an eager call reuses the compiled kernels (each
  ``pallas_call`` gets a fresh kernel partial, which un-jitted would recompile every call)."""
  if impl == "mosaic_tpu":
    idx = mosaic_tpu.indices(scores, counts, max_k, interpret=interpret)
    return TokenSelection(idx, gather_rows(features, idx), counts)
  idx, feats = triton.select(scores, features, counts, max_k, interpret=interpret, **dict(tuning))
  return TokenSelection(idx, feats, counts)


def select_tokens_above(scores: jax.Array, features: jax.Array, threshold: float | jax.Array,
                        max_k: int, **kwargs) -> TokenSelection:
  """Keep tokens scoring ``>= threshold`` (scalar or ``[B]``); over ``max_k``: the top ``max_k``."""
  thr = jnp.asarray(threshold, jnp.float32).reshape(-1, 1)
  counts = jnp.sum(scores.astype(jnp.float32) >= thr, axis=1).astype(jnp.int32)
  return select_tokens(scores, features, counts, max_k=max_k, **kwargs)
