"""Mapping between Hugging Face safetensors names and our nnx parameter paths.

A family declares a list of :class:`Rule` s. Each rule pairs an HF-name template with one or more
of our dotted parameter paths; ``{i}`` stands for a layer number and ``{p}`` for a dotted path.
By default a tensor is transposed when our leaf is a Linear ``kernel`` (HF ``[out, in]`` ->
``[in, out]``) and copied otherwise; rules with ``split``/``merge`` handle packed tensors (one HF
tensor <-> several of ours). A rule applies only where its target paths exist in the model, so
generic rules (``{p}.weight -> {p}.kernel``) and specific ones coexist; the first match wins.

Loading fills an abstract (``nnx.eval_shape``) model tensor by tensor, optionally straight onto a
mesh sharding derived from each parameter's ``logical_axes``; every tensor must be consumed and
every parameter filled, and shapes must match, else a :mod:`jaxvlm.errors` error names it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from jaxvlm.errors import CheckpointError, MissingFileError, TensorShapeError, UnusedTensorError

_PLACEHOLDERS = {"i": r"\d+", "p": r"[\w.]+?"}


def _compile(template: str) -> re.Pattern:
  pattern = re.escape(template)
  for name, rx in _PLACEHOLDERS.items():
    pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{rx})")
  return re.compile(pattern + "$")


@dataclasses.dataclass(frozen=True)
class Rule:
  """``hf`` template <-> ``ours`` template(s); optional ``split(hf_tensor) -> tuple`` and inverse
  ``merge(tuple) -> hf_tensor`` for packed tensors (arrays in HF layout, before transposition)."""

  hf: str
  ours: str | tuple[str, ...]
  split: Callable[[np.ndarray], Sequence[np.ndarray]] | None = None
  merge: Callable[[Sequence[np.ndarray]], np.ndarray] | None = None

  @property
  def targets(self) -> tuple[str, ...]:
    return (self.ours,) if isinstance(self.ours, str) else tuple(self.ours)

  def match_hf(self, name: str) -> tuple[str, ...] | None:
    m = _compile(self.hf).match(name)
    return None if m is None else tuple(t.format(**m.groupdict()) for t in self.targets)

  def match_ours(self, path: str) -> tuple[str, tuple[str, ...]] | None:
    """(HF name, all our target paths) when ``path`` is any one of this rule's targets."""
    for target in self.targets:
      m = _compile(target).match(path)
      if m is not None:
        g = m.groupdict()
        return self.hf.format(**g), tuple(t.format(**g) for t in self.targets)
    return None


def to_ours_layout(path: str, x: np.ndarray) -> np.ndarray:
  return x.T if path.endswith(".kernel") and x.ndim == 2 else x


def flat_params(model: nnx.Module) -> dict[str, nnx.Variable]:
  """Dotted path -> Param variable, for every parameter of ``model``."""
  out = {}
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    out[".".join(str(p) for p in path)] = var
  return out


# ----------------------------------------------------------------------------- reading files


_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
           "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2, "I64": np.int64,
           "I32": np.int32, "I16": np.int16, "I8": np.int8, "U64": np.uint64, "U32": np.uint32,
           "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_}
_PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth")


class SafetensorsFile:
  """A memory-mapped ``.safetensors`` file (any dtype, bfloat16 included); a truncated or corrupt
  file, or an unknown dtype, raises :class:`CheckpointError` naming the file (and tensor)."""

  def __init__(self, path: str):
    self.path = path
    size = os.path.getsize(path)
    with open(path, "rb") as f:
      head = f.read(8)
      n = int.from_bytes(head, "little") if len(head) == 8 else -1
      if n < 2 or 8 + n > size:
        raise CheckpointError(f"{path}: truncated or not a safetensors file (header of {n} bytes, "
                              f"file of {size} bytes); re-download or re-save it")
      try:
        header = json.loads(f.read(n))
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from None
    header.pop("__metadata__", None)
    self.header, self.data_start = header, 8 + n
    for name, info in header.items():
      if info.get("dtype") not in _DTYPES:
        raise CheckpointError(f"{path}: tensor {name!r} has dtype {info.get('dtype')!r}, "
                              f"expected one of {sorted(_DTYPES)}")
      end = self.data_start + info["data_offsets"][1]
      if end > size:
        raise CheckpointError(f"{path}: truncated (tensor {name!r} ends at byte {end}, the file "
                              f"has {size}); re-download or re-save it")
    self._map = np.memmap(path, np.uint8, mode="r") if size else np.zeros(0, np.uint8)

  def keys(self) -> list[str]:
    return list(self.header)

  def get_tensor(self, name: str) -> np.ndarray:
    info = self.header[name]
    lo, hi = (self.data_start + o for o in info["data_offsets"])
    return self._map[lo:hi].view(_DTYPES[info["dtype"]]).reshape(info["shape"])


def read_safetensors_folder(path: str) -> "TensorSource":
  """Opens ``model.safetensors`` or the shards named by ``model.safetensors.index.json``.

  Pickle-only PyTorch weights (``pytorch_model.bin``) are refused: unpickling runs code.
  """
  index = os.path.join(path, "model.safetensors.index.json")
  single = os.path.join(path, "model.safetensors")
  if os.path.exists(index):
    with open(index) as f:
      weight_map = json.load(f)["weight_map"]
    files = sorted(set(weight_map.values()))
  elif os.path.exists(single):
    files = ["model.safetensors"]
  else:
    pickled = [f for f in _PICKLE_FILES if os.path.exists(os.path.join(path, f))]
    if pickled:
      raise CheckpointError(
          f"{os.path.join(path, pickled[0])}: pickle-only PyTorch weights are not read (loading "
          "them runs arbitrary code); convert the folder once with transformers: "
          f"AutoModel.from_pretrained({path!r}).save_pretrained({path!r})  # writes safetensors")
    raise MissingFileError(single, "weights (model.safetensors or model.safetensors.index.json)")
  handles = {}
  names = {}
  for fname in files:
    fpath = os.path.join(path, fname)
    if not os.path.exists(fpath):
      raise MissingFileError(fpath, f"safetensors shard listed in {os.path.basename(index)}")
    handles[fname] = SafetensorsFile(fpath)
    for key in handles[fname].keys():
      names[key] = fname
  return TensorSource(path, handles, names)


@dataclasses.dataclass
class TensorSource:
  folder: str
  handles: dict
  names: dict[str, str]  # tensor name -> file

  def keys(self) -> list[str]:
    return list(self.names)

  def get(self, name: str) -> np.ndarray:
    return self.handles[self.names[name]].get_tensor(name)

  def where(self, name: str) -> str:
    return os.path.join(self.folder, self.names[name])


# ----------------------------------------------------------------------------- loading


def load_into(abstract_model: nnx.Module, source: TensorSource | Mapping[str, np.ndarray],
              rules: Sequence[Rule], *, sharding_fn: Callable[[nnx.Variable], object] | None = None,
              ignore: Iterable[str] = ()) -> nnx.Module:
  """Fills ``abstract_model`` (from ``nnx.eval_shape``) with tensors named by HF conventions.

  ``sharding_fn(var)`` gives the target sharding of a parameter (None: default device).
  ``ignore`` lists regexes of HF names that are deliberately skipped (e.g. rotary buffers).
  """
  params = flat_params(abstract_model)
  get = source.get if isinstance(source, TensorSource) else source.__getitem__
  names = source.keys() if isinstance(source, TensorSource) else list(source)
  where = source.where if isinstance(source, TensorSource) else (lambda n: "")
  ignore_rx = [re.compile(r) for r in ignore]
  filled, unused = set(), []
  for name in names:
    if any(r.match(name) for r in ignore_rx):
      continue
    targets, rule = _resolve(name, rules, params)
    if targets is None:
      unused.append(name)
      continue
    tensor = get(name)
    if not jnp.issubdtype(tensor.dtype, jnp.floating):  # bfloat16 / float8 included
      raise CheckpointError(f"{where(name) or 'checkpoint'}: tensor {name!r} has dtype "
                            f"{tensor.dtype}, expected a floating-point dtype")
    parts = rule.split(tensor) if rule.split else (tensor,)
    for path, part in zip(targets, parts):
      var = params[path]
      value = to_ours_layout(path, np.asarray(part))
      if tuple(value.shape) != tuple(var.shape):  # report both in the file's (HF) layout
        expected = to_ours_layout(path, np.empty(var.shape, np.int8)).shape
        raise TensorShapeError(name, np.shape(part), expected, where(name))
      sharding = sharding_fn(var) if sharding_fn else None
      arr = jnp.asarray(value, dtype=var.dtype) if sharding is None else jax.device_put(
          value.astype(var.dtype), sharding)
      var.set_value(arr)
      filled.add(path)
  missing = sorted(set(params) - filled)
  if unused or missing:
    raise UnusedTensorError(unused, missing, getattr(source, "folder", ""))
  return abstract_model


def _resolve(name: str, rules: Sequence[Rule], params: Mapping[str, object]):
  for rule in rules:
    targets = rule.match_hf(name)
    if targets is not None and all(t in params for t in targets):
      return targets, rule
  return None, None


# ----------------------------------------------------------------------------- saving


def export_tensors(model: nnx.Module, rules: Sequence[Rule], dtype=None) -> dict[str, np.ndarray]:
  """Our parameters -> HF-named numpy tensors (the inverse of :func:`load_into`)."""
  params = flat_params(model)
  out, done = {}, set()
  for path in params:
    if path in done:
      continue
    for rule in rules:
      m = rule.match_ours(path)
      if m is None or not all(t in params for t in m[1]):
        continue
      hf_name, targets = m
      parts = [np.asarray(jax.device_get(params[t][...])) for t in targets]
      parts = [to_ours_layout(t, p) for t, p in zip(targets, parts)]  # transpose is an involution
      tensor = rule.merge(parts) if rule.merge else parts[0]
      if dtype is not None:
        tensor = tensor.astype(dtype)
      out[hf_name] = np.ascontiguousarray(tensor).reshape(tensor.shape)  # keeps 0-d scalars
      done.update(targets)
      break
    else:
      raise UnusedTensorError([], [path], "export (no rule names this parameter)")
  return out


def write_safetensors(tensors: Mapping[str, np.ndarray], folder: str,
                      max_shard_bytes: int = 4 << 30) -> None:
  """Writes ``model.safetensors`` (or shards + index when larger than ``max_shard_bytes``)."""
  from safetensors.numpy import save_file
  from jaxvlm.io import atomic_open
  os.makedirs(folder, exist_ok=True)
  shards, current, size = [], {}, 0
  for name in sorted(tensors):
    nbytes = tensors[name].nbytes
    if current and size + nbytes > max_shard_bytes:
      shards.append(current)
      current, size = {}, 0
    current[name] = tensors[name]
    size += nbytes
  shards.append(current)
  if len(shards) == 1:
    _save_atomic(save_file, shards[0], os.path.join(folder, "model.safetensors"))
    return
  weight_map = {}
  for k, shard in enumerate(shards):
    fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
    _save_atomic(save_file, shard, os.path.join(folder, fname))
    weight_map.update({n: fname for n in shard})
  total = sum(t.nbytes for t in tensors.values())
  with atomic_open(os.path.join(folder, "model.safetensors.index.json")) as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def _save_atomic(save_file, tensors, path):
  tmp = path + ".tmp"
  save_file(dict(tensors), tmp, metadata={"format": "pt"})
  os.replace(tmp, path)
