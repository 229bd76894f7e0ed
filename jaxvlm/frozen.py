"""One ``nnx.split`` per model for a block of inference calls.

``nnx.split`` walks the module graph in Python on every call: for a 7B VLM with its vision tower
(thousands of nodes) that is tens of milliseconds of host time before each jit-compiled entry
point (``generate``, the SGL guide pass, AdaLLaVA's budget inputs) can dispatch. Inside
``with freeze(model, ...):`` :func:`split` returns the split made on entry, so a batch of several
calls pays the walk once. The weights must not change inside the block: the split holds the
arrays of entry. :func:`jit` compiles an inference function of a model on that split.

The graph of a split also hashes once: ``GraphDef.__hash__`` walks every node, and
``jax.jit`` hashes its static arguments on each call (about 6 ms for a 2B VLM's graph on one
core, several times per SGL batch).
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from typing import Callable, Iterator

import jax
from flax import nnx

_SPLITS: dict[int, tuple[nnx.Module, nnx.GraphDef, nnx.State]] = {}


class _HashedGraphDef(nnx.GraphDef):
  """A ``GraphDef`` whose hash is computed once (it is immutable). Every :func:`split` returns
  one (jit caches also compare the static arguments' types), interned: equal graphs are one
  object, so a jit cache hit is an identity check, not a walk of both graphs."""

  __slots__ = ("_hash", "__weakref__")

  def __hash__(self) -> int:
    return self._hash

  def __eq__(self, other) -> bool:
    fields = lambda g: (g.nodes, g.attributes, g.num_leaves)
    return self is other or (isinstance(other, nnx.GraphDef) and fields(self) == fields(other))


_INTERNED: weakref.WeakValueDictionary[int, _HashedGraphDef] = weakref.WeakValueDictionary()


def _hashed(graphdef: nnx.GraphDef) -> nnx.GraphDef:
  key = hash(graphdef)
  known = _INTERNED.get(key)
  if known is not None and known == graphdef:
    return known
  out = _HashedGraphDef(graphdef.nodes, graphdef.attributes, graphdef.num_leaves)
  object.__setattr__(out, "_hash", key)
  _INTERNED[key] = out
  return out


@contextlib.contextmanager
def freeze(*models: nnx.Module) -> Iterator[None]:
  """Within the block, :func:`split` of each of ``models`` reuses one split (nests)."""
  saved = {id(m): _SPLITS.get(id(m)) for m in models}
  for m in models:
    graphdef, state = nnx.split(m)
    _SPLITS[id(m)] = (m, _hashed(graphdef), state)
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
  graphdef, state = nnx.split(model)
  return _hashed(graphdef), state


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
