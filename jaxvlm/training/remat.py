"""Per-layer rematerialisation: recompute a module's activations in the backward pass."""

from __future__ import annotations

import functools
import re

from flax import nnx


@functools.cache
def _remat_class(cls: type) -> type:
  """A subclass of ``cls`` whose ``__call__`` runs under ``nnx.remat`` (keywords stay static)."""
  def __call__(self, *args, **kwargs):
    return nnx.remat(lambda module, *a: cls.__call__(module, *a, **kwargs))(self, *args)
  return type(f"Remat{cls.__name__}", (cls,), {"__call__": __call__, "_remat": True})


def remat_modules(model: nnx.Module, pattern: str) -> int:
  """Makes every submodule whose dotted path matches ``pattern`` (``re.search``) rematerialise
  its ``__call__``; parameter names are unchanged. Returns the number of modules wrapped."""
  count = 0
  for path, module in nnx.iter_modules(model):
    name = ".".join(map(str, path))
    if path and re.search(pattern, name) and not getattr(module, "_remat", False):
      module.__class__ = _remat_class(type(module))
      count += 1
  return count
