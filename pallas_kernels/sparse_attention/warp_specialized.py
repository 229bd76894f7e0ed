"""The warp-specialised CTA shared by the Mosaic GPU (Hopper) sparse-attention kernels.

A kernel runs two compute warpgroups (64 rows each of a 128-row tile) and one memory warpgroup
(``specialize``). The memory warpgroup feeds rings of shared-memory slots by TMA (``Ring``,
``stream``): per buffer and slot a ``loaded`` barrier says the copy landed and a ``free``
barrier (both compute warpgroups arrive) says the slot may be refilled. Also here: selection
addressing (``piece_start``), tile masks (causal, key padding, segment ids) and the plumbing of
segment-id buffers (``Segments``).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

import jax.experimental.pallas.mosaic_gpu as plgpu
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels.sparse_attention.config import AttentionSpec

WG_ROWS = 64  # rows per compute warpgroup (one wgmma M tile)
COMPUTE_WGS = 2
CTA_ROWS = WG_ROWS * COMPUTE_WGS
SMEM_BYTES = 227 * 1024 - 4096  # less room for barriers and alignment
# jax < 0.11 requires plgpu.load's index argument; later versions deprecate it.
_LOAD_INDEX = (((),) if inspect.signature(plgpu.load).parameters["idx"].default
               is inspect.Parameter.empty else ())


@dataclasses.dataclass(frozen=True)
class Ring:
  """A ring of shared-memory slots fed by TMA: ``source(where)`` is a step's GMEM view."""
  source: Callable[[Any], Any]
  smem: Any
  loaded: Any
  free: Any


def stream(steps, slots: int, rings: tuple[Ring, ...], locate: Callable[[Any], Any]):
  """Memory warpgroup: step ``s`` fills slot ``s % slots`` once step ``s - slots`` freed it.

  ``locate(step)`` (the step's position in GMEM, scalar loads) runs once per step and feeds
  every ring's ``source``.
  """
  @pl.loop(0, steps)
  def _(step):
    slot = lax.rem(step, jnp.int32(slots))
    where = locate(step)
    for ring in rings:
      @pl.when(step >= slots)
      def _():
        plgpu.barrier_wait(ring.free.at[slot])

      plgpu.copy_gmem_to_smem(ring.source(where), ring.smem.at[slot], ring.loaded.at[slot])


def piece_start(table, row: tuple, step, block: int, piece: int):
  """First position of the ``step``-th ``piece``-long part of the blocks in ``table[row]``."""
  per_block = block // piece
  if per_block == 1:
    return table[(*row, step)] * block
  step = jnp.asarray(step, jnp.int32)
  first = table[(*row, lax.div(step, jnp.int32(per_block)))] * block
  return first + lax.rem(step, jnp.int32(per_block)) * piece


def allowed(spec: AttentionSpec, shape, q_start, k_start, keys_are_rows: bool):
  """Bool tile mask (causal, key padding); rows are queries, or keys when ``keys_are_rows``."""
  rows = plgpu.broadcasted_iota(jnp.int32, shape, 0, layout=plgpu.Layout.WGMMA)
  cols = plgpu.broadcasted_iota(jnp.int32, shape, 1, layout=plgpu.Layout.WGMMA)
  if keys_are_rows:
    return cols >= rows + (k_start - q_start)
  last = None if spec.kv_len is None else spec.kv_len - 1 - k_start
  if spec.causal:
    diag = rows + (q_start - k_start)
    last = diag if last is None else jnp.minimum(diag, last)
  return cols <= last


def _position_masked(spec: AttentionSpec, keys_are_rows: bool) -> bool:
  # dK/dV: padded keys only reach their own (discarded) gradient rows.
  return spec.causal or (spec.kv_len is not None and not keys_are_rows)


def masked(spec: AttentionSpec, keys_are_rows: bool = False) -> bool:
  """Whether tiles need a mask at all (else the kernels skip the mask code)."""
  return spec.segments or _position_masked(spec, keys_are_rows)


def mask_tile(x, fill, spec: AttentionSpec, q_start, k_start, row_seg=None, col_seg=None,
              keys_are_rows: bool = False):
  """``x [64, n]`` with the disallowed entries replaced by ``fill``."""
  if _position_masked(spec, keys_are_rows):
    x = jnp.where(allowed(spec, x.shape, q_start, k_start, keys_are_rows), x, fill)
  if row_seg is not None:
    same = (lax.broadcast_in_dim(row_seg, x.shape, [0])
            == lax.broadcast_in_dim(col_seg, x.shape, [1]))
    x = jnp.where(same, x, fill)
  return x


@dataclasses.dataclass(frozen=True)
class Segments:
  """Segment ids in a kernel: a vector per compute warpgroup's rows, a ring of column vectors.

  ``smem``/``barriers`` extend the kernel's scratch; ``rows(refs, wg, src)`` loads a warpgroup's
  row ids once; ``ring(refs, source)`` streams the column ids with the K/V (or Q) tiles;
  ``cols(refs, slot)`` reads one step's column ids and frees the slot.
  """
  slots: int
  cols_per_step: int

  @property
  def smem(self):
    return (plgpu.SMEM((COMPUTE_WGS, WG_ROWS), jnp.int32),
            plgpu.SMEM((self.slots, self.cols_per_step), jnp.int32))

  @property
  def barriers(self):
    return (plgpu.Barrier(num_barriers=COMPUTE_WGS), plgpu.Barrier(num_barriers=self.slots),
            plgpu.Barrier(num_arrivals=COMPUTE_WGS, num_barriers=self.slots))

  @staticmethod
  def rows(refs, wg, source):
    (row_smem, _), (row_loaded, _, _) = refs
    plgpu.copy_gmem_to_smem(source, row_smem.at[wg], row_loaded.at[wg])
    plgpu.barrier_wait(row_loaded.at[wg])
    return load_vector(row_smem.at[wg], plgpu.Layout.WGMMA.reduce(1))

  @staticmethod
  def ring(refs, source):
    (_, col_smem), (_, col_loaded, col_free) = refs
    return Ring(source, col_smem, col_loaded, col_free)

  @staticmethod
  def cols(refs, slot):
    (_, col_smem), (_, col_loaded, col_free) = refs
    plgpu.barrier_wait(col_loaded.at[slot])
    ids = load_vector(col_smem.at[slot], plgpu.Layout.WGMMA.reduce(0))
    plgpu.barrier_arrive(col_free.at[slot])
    return ids


def ring_slots(spec: AttentionSpec, fixed_bytes: int, slot_bytes: int) -> int:
  """Ring depth: ``spec.num_stages`` (at least 2), as many as shared memory holds."""
  return max(2, min(spec.num_stages, (SMEM_BYTES - fixed_bytes) // slot_bytes))


def swizzled(shape, dtype):
  return plgpu.SMEM(shape, dtype,
                    transforms=(plgpu.TilingTransform((8, 64)), plgpu.SwizzleTransform(128)))


def launch(body, args, out_type, grid, grid_names, smem, barriers):
  """Runs ``body(*in_refs, *out_refs, smem, barriers)`` on 2 compute + 1 memory warpgroups."""
  def entry(*refs):
    pl.run_scoped(lambda smem_refs, *barrier_refs: body(*refs, smem_refs, barrier_refs),
                  smem, *barriers, collective_axes="wg")

  return plgpu.kernel(entry, out_type=out_type, grid=grid, grid_names=grid_names,
                      num_threads=COMPUTE_WGS + 1, thread_name="wg",
                      compiler_params=plgpu.CompilerParams(approx_math=True))(*args)


def specialize(compute: Callable[[Any], None], memory: Callable[[], None]):
  """Warpgroups 0..1 run ``compute(wg)`` with most registers; the last runs ``memory()``."""
  wg = lax.axis_index("wg")

  @pl.when(wg < COMPUTE_WGS)
  def _():
    plgpu.set_max_registers(232, action="increase")
    compute(wg)

  @pl.when(wg == COMPUTE_WGS)
  def _():
    plgpu.set_max_registers(40, action="decrease")
    memory()


def matmul(a, b, shape):
  """``a @ b`` by wgmma into a fresh float32 ``shape`` accumulator (waits for the result)."""
  def body(acc_ref):
    plgpu.wgmma(acc_ref, a, b)
    return acc_ref[...]

  return pl.run_scoped(body, plgpu.ACC(shape, jnp.float32))


def matmul_add(acc, a, b):
  """``acc + a @ b`` by wgmma accumulating in place."""
  return pl.run_state(lambda acc_ref: plgpu.wgmma(acc_ref, a, b))(plgpu.ACC.init(acc))


def zeros_acc(shape):
  """A float32 zero tile in the wgmma accumulator layout."""
  return plgpu.layout_cast(jnp.full(shape, 0.0, jnp.float32), plgpu.Layout.WGMMA)


def row_vector(value):
  """A per-row (query) vector of a ``[64, n]`` WGMMA tile."""
  return plgpu.layout_cast(jnp.full((WG_ROWS,), value, jnp.float32),
                           plgpu.Layout.WGMMA.reduce(1))


def load_vector(ref, layout):
  """``ref``'s vector in registers with ``layout`` (a row or column of a WGMMA tile)."""
  return plgpu.load(ref, *_LOAD_INDEX, layout=layout)


def selection_row(spec: AttentionSpec, bi, head, block):
  """The selection row of (batch, query head, block)."""
  return (bi if spec.sel_batch > 1 else 0, lax.div(head, jnp.int32(spec.sel_group)), block)
