"""One ``nnx.split`` per model for a block of inference calls.

``nnx.split`` walks the module graph in Python on every call: for a 7B VLM with its vision tower
(thousands of nodes) that is tens of milliseconds of host time before each jit-compiled entry
point (``generate``, the SGL guide pass, AdaLLaVA's budget inputs) can dispatch. Inside
``with freeze(model, ...):`` :func:`split` returns the split made on entry, so a batch of several
calls pays the walk once. The weights must not change inside the block: the split holds the
arrays of entry. :func:`jit` compiles an inference function of a model on that split.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Callable, Iterator

import jax
from flax import nnx

_SPLITS: dict[int, tuple[nnx.Module, nnx.GraphDef, nnx.State]] = {}


@contextlib.contextmanager
def freeze(*models: nnx.Module) -> Iterator[None]:
  """Within the block, :func:`split` of each of ``models`` reuses one split (nests)."""
  saved = {id(m): _SPLITS.get(id(m)) for m in models}
  for m in models:
    _SPLITS[id(m)] = (m, *nnx.split(m))
  try:
    yield
  finally:
    for key, entry in saved.items():
      if entry is None:
        _SPLITS.pop(key, None)
      else:
        _SPLITS[key] = entry


def split(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State]:
  """``nnx.split(model)``, reused inside :func:`freeze` for that model."""
  entry = _SPLITS.get(id(model))
  if entry is not None and entry[0] is model:
    return entry[1], entry[2]
  return nnx.split(model)


def jit(fn: Callable | None = None, *, static_argnames: tuple[str, ...] = ()) -> Callable:
  """``jax.jit`` of an inference function ``fn(model, *args, **kwargs)``: the model travels as
  :func:`split` (graph static, state traced); changes ``fn`` makes to the model are dropped."""
  if fn is None:
    return functools.partial(jit, static_argnames=static_argnames)

  @functools.partial(jax.jit, static_argnames=("graphdef", *static_argnames))
  def pure(graphdef, state, *args, **kwargs):
    return fn(nnx.merge(graphdef, state), *args, **kwargs)

  @functools.wraps(fn)
  def call(model, *args, **kwargs):
    graphdef, state = split(model)
    return pure(graphdef, state, *args, **kwargs)
  return call
