"""GPU kernel (Pallas Mosaic GPU, Hopper): block-sparse flash attention forward.

The FlashAttention-3 schedule, driven by the selection. One CTA per (128-row query tile,
query head, batch) runs three warpgroups:

- two compute warpgroups own 64 query rows each: ``S = Q Kᵀ`` and ``O += P V`` by ``wgmma`` from
  shared memory, online softmax in registers; a schedule barrier alternates them so one's
  softmax overlaps the other's matmuls;
- one memory warpgroup reads the CTA's selection row (``kv_block_indices``, ``kv_block_counts``:
  scalar loads) and TMA-copies only the selected K/V tiles into a ring of ``slots`` shared-memory
  buffers. Per slot, a ``loaded`` barrier (TMA done) and a ``free`` barrier (both compute
  warpgroups done with it) hand the buffer back and forth.

Both compute warpgroups sit in one selection row (block_q is a multiple of 128), so they walk
the same steps and share every K/V tile. Unselected blocks are never loaded. Causal and key
padding masks are applied per tile when the call has them; segment ids are left to the Triton
kernel (see ``unsupported``). The backward pass reuses the Triton kernels: the forward returns
the same natural-log log-sum-exp.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels.sparse_attention.config import AttentionSpec
from pallas_kernels.sparse_attention.tile import LOG2E

WG_ROWS = 64  # query rows per compute warpgroup (one wgmma M tile)
COMPUTE_WGS = 2
CTA_ROWS = WG_ROWS * COMPUTE_WGS
SMEM_BYTES = 227 * 1024
LN2 = 0.6931471805599453


def unsupported(spec: AttentionSpec, dtype, head_dim: int) -> str | None:
  """Why this kernel cannot run the call (None if it can): the text of a ConfigError."""
  devices = jax.devices()
  if devices[0].platform != "gpu" or getattr(devices[0], "compute_capability", "") != "9.0":
    return "a Hopper GPU (sm_90) for wgmma/TMA; use 'triton' or 'xla' elsewhere"
  if jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
    return f"bfloat16 or float16 inputs (got {jnp.dtype(dtype).name}); 'triton' runs float32"
  if spec.segments:
    return "no segment ids; 'triton' supports them"
  if head_dim % 64 or head_dim > 256:
    return f"head_dim a multiple of 64 up to 256 (got {head_dim})"
  if spec.block_q % CTA_ROWS or spec.block_k % 64:
    return (f"selection blocks with block_q a multiple of {CTA_ROWS} and block_k of 64 "
            f"(got {spec.block_q}x{spec.block_k})")
  return None


def _kv_tile(block_k: int) -> int:
  """Keys per pipeline step: 128 where the block allows it, else 64."""
  return 128 if block_k % 128 == 0 else 64


def _slots(spec: AttentionSpec, tile_k: int, head_dim: int, itemsize: int) -> int:
  """K/V buffers in flight: ``spec.num_stages`` (at least 2), as many as shared memory holds."""
  fixed = COMPUTE_WGS * WG_ROWS * (head_dim * itemsize + 4)
  per_slot = 2 * tile_k * head_dim * itemsize
  return max(2, min(spec.num_stages, (SMEM_BYTES - fixed) // per_slot))


def forward(q, k, v, indices, counts, q_seg, kv_seg, spec: AttentionSpec):
  """Padded ``q [B, Sq', Hq, D]``, ``k, v [B, Sk', Hkv, D]`` -> ``(out, lse [B, Hq, Sq'])``."""
  import jax.experimental.pallas.mosaic_gpu as plgpu  # imports CUDA-only modules lazily

  del q_seg, kv_seg  # refused by `unsupported`
  b, sqp, hq, d = q.shape
  dtype = q.dtype
  tile_k = _kv_tile(spec.block_k)
  tiles_per_block = spec.block_k // tile_k
  slots = _slots(spec, tile_k, d, jnp.dtype(dtype).itemsize)
  masked = spec.causal or spec.kv_len is not None
  scale2 = spec.scale * LOG2E  # scores in the base-2 domain, for exp2

  def kv_start(idx_ref, row, step):
    """First key row of pipeline step ``step`` (the ``step``-th selected tile)."""
    if tiles_per_block == 1:
      return idx_ref[(*row, step)] * spec.block_k
    step = jnp.asarray(step, jnp.int32)
    block = idx_ref[(*row, lax.div(step, jnp.int32(tiles_per_block)))]
    return block * spec.block_k + lax.rem(step, jnp.int32(tiles_per_block)) * tile_k

  def tile_mask(q_base, kv_base):
    """Allowed entries of a tile: key <= min(query (causal), last real key (padding))."""
    cols = plgpu.broadcasted_iota(jnp.int32, (WG_ROWS, tile_k), 1, layout=plgpu.Layout.WGMMA)
    last = None if spec.kv_len is None else spec.kv_len - 1 - kv_base
    if spec.causal:
      rows = plgpu.broadcasted_iota(jnp.int32, (WG_ROWS, tile_k), 0, layout=plgpu.Layout.WGMMA)
      diag = rows + (q_base - kv_base)
      last = diag if last is None else jnp.minimum(diag, last)
    return cols <= last

  def kernel(idx_ref, cnt_ref, q_ref, k_ref, v_ref, out_ref, lse_ref, scoped):
    (qo_smem2, k_smem, v_smem, lse_smem2), loaded, freed, turn = scoped
    k_loaded, v_loaded, q_loaded = loaded
    k_free, v_free = freed
    bi, h, qt = lax.axis_index("batch"), lax.axis_index("heads"), lax.axis_index("q_tiles")
    wg = lax.axis_index("wg")
    row = (bi if spec.sel_batch > 1 else 0, lax.div(h, jnp.int32(spec.sel_group)),
           lax.div(qt, jnp.int32(spec.block_q // CTA_ROWS)))
    steps = cnt_ref[row] * tiles_per_block

    def take_turn():
      plgpu.barrier_arrive(turn)
      plgpu.barrier_wait(turn)

    @pl.when(wg < COMPUTE_WGS)
    def _compute():
      plgpu.set_max_registers(232, action="increase")
      qo_smem, lse_smem = qo_smem2.at[wg], lse_smem2.at[wg]
      q_base = qt * CTA_ROWS + wg * WG_ROWS
      plgpu.copy_gmem_to_smem(q_ref.at[bi, pl.ds(q_base, WG_ROWS), h], qo_smem,
                              q_loaded.at[wg])
      plgpu.barrier_wait(q_loaded.at[wg])
      m = plgpu.layout_cast(jnp.full((WG_ROWS,), -jnp.inf, jnp.float32),
                            plgpu.Layout.WGMMA.reduce(1))
      l = plgpu.layout_cast(jnp.full((WG_ROWS,), 0.0, jnp.float32),
                            plgpu.Layout.WGMMA.reduce(1))
      acc = plgpu.layout_cast(jnp.full((WG_ROWS, d), 0.0, jnp.float32), plgpu.Layout.WGMMA)

      @pl.when(steps > 0)
      def _():
        plgpu.barrier_wait(k_loaded.at[0])

      pl.when(wg == 1)(take_turn)

      def step_fn(step, carry):
        acc, m, l = carry
        slot = lax.rem(step, jnp.int32(slots))

        def qk(acc_ref):
          plgpu.wgmma(acc_ref, qo_smem, plgpu.transpose_ref(k_smem.at[slot], (1, 0)))
          take_turn()
          return acc_ref[...]

        s = pl.run_scoped(qk, plgpu.ACC((WG_ROWS, tile_k), jnp.float32))
        plgpu.barrier_arrive(k_free.at[slot])
        if masked:
          s = jnp.where(tile_mask(q_base, kv_start(idx_ref, row, step)), s, -jnp.inf)
        m_new = jnp.maximum(m, s.max(axis=1) * scale2)
        # Only a mask can leave a row's max at -inf; exp2 then needs a finite offset.
        m_use = jnp.where(m_new == -jnp.inf, 0.0, m_new) if masked else m_new
        alpha = jnp.exp2(m - m_use)
        p = jnp.exp2(s * scale2 - lax.broadcast_in_dim(m_use, s.shape, [0]))
        acc *= lax.broadcast_in_dim(alpha, acc.shape, [0])
        l *= alpha
        p16 = p.astype(dtype)

        def release_turn():
          plgpu.barrier_arrive(turn)  # softmax done
          plgpu.barrier_wait(v_loaded.at[slot])
          plgpu.barrier_wait(turn)  # the other warpgroup's matmuls are issued

        if d <= 128:  # the order FlashAttention-3 found fastest per head size
          l += p.sum(axis=1)
          acc, l, m_new, p16 = lax.optimization_barrier((acc, l, m_new, p16))
          release_turn()
        else:
          release_turn()
          l += p.sum(axis=1)

        def pv(acc_ref):
          plgpu.wgmma(acc_ref, p16, v_smem.at[slot])
          nxt = step + 1

          @pl.when(nxt < steps)
          def _():
            plgpu.barrier_wait(k_loaded.at[lax.rem(nxt, jnp.int32(slots))])

        acc = pl.run_state(pv)(plgpu.ACC.init(acc))
        plgpu.barrier_arrive(v_free.at[slot])
        return acc, m_new, l

      acc, m, l = lax.fori_loop(0, steps, step_fn, (acc, m, l))
      pl.when(wg == 0)(take_turn)
      # A non-empty row has l >= 1 (its max term is exp2(0)); an empty one has l = 0,
      # acc = 0 and m = -inf, so it writes 0 and log-sum-exp -inf.
      l = jnp.maximum(l, 1.0)
      acc /= lax.broadcast_in_dim(l, acc.shape, [0])
      qo_smem[...] = acc.astype(dtype)
      lse_smem[...] = m * LN2 + jnp.log(l)
      plgpu.commit_smem()
      plgpu.copy_smem_to_gmem(qo_smem, out_ref.at[bi, pl.ds(q_base, WG_ROWS), h])
      plgpu.copy_smem_to_gmem(lse_smem, lse_ref.at[bi, h, pl.ds(q_base, WG_ROWS)])
      plgpu.wait_smem_to_gmem(0)

    @pl.when(wg == COMPUTE_WGS)
    def _memory():
      plgpu.set_max_registers(40, action="decrease")
      kv_head = lax.div(h, jnp.int32(spec.kv_group))

      def fetch(step, slot, ref, smem, barrier):
        keys = (bi, pl.ds(kv_start(idx_ref, row, step), tile_k), kv_head)
        plgpu.copy_gmem_to_smem(ref.at[keys], smem.at[slot], barrier.at[slot])

      for i in range(slots):
        @pl.when(i < steps)
        def _():
          fetch(i, i, k_ref, k_smem, k_loaded)
          fetch(i, i, v_ref, v_smem, v_loaded)

      @pl.loop(0, jnp.maximum(steps - slots, 0))
      def _(step):
        slot = lax.rem(step, jnp.int32(slots))
        plgpu.barrier_wait(k_free.at[slot])
        fetch(step + slots, slot, k_ref, k_smem, k_loaded)
        plgpu.barrier_wait(v_free.at[slot])
        fetch(step + slots, slot, v_ref, v_smem, v_loaded)

  def entry(idx_ref, cnt_ref, q_ref, k_ref, v_ref, out_ref, lse_ref):
    transforms = (plgpu.TilingTransform((8, 64)), plgpu.SwizzleTransform(128))
    smem = (plgpu.SMEM((COMPUTE_WGS, WG_ROWS, d), dtype, transforms=transforms),
            plgpu.SMEM((slots, tile_k, d), dtype, transforms=transforms),
            plgpu.SMEM((slots, tile_k, d), dtype, transforms=transforms),
            plgpu.SMEM((COMPUTE_WGS, WG_ROWS), jnp.float32))
    loaded = (plgpu.Barrier(num_barriers=slots), plgpu.Barrier(num_barriers=slots),
              plgpu.Barrier(num_barriers=COMPUTE_WGS))
    freed = (plgpu.Barrier(num_arrivals=COMPUTE_WGS, num_barriers=slots),) * 2
    pl.run_scoped(
        lambda *scoped: kernel(idx_ref, cnt_ref, q_ref, k_ref, v_ref, out_ref, lse_ref, scoped),
        smem, loaded, freed, plgpu.Barrier(num_arrivals=COMPUTE_WGS), collective_axes="wg")

  return plgpu.kernel(
      entry,
      out_type=[jax.ShapeDtypeStruct(q.shape, dtype),
                jax.ShapeDtypeStruct((b, hq, sqp), jnp.float32)],
      grid=(hq, sqp // CTA_ROWS, b),
      grid_names=("heads", "q_tiles", "batch"),
      num_threads=COMPUTE_WGS + 1,
      thread_name="wg",
      compiler_params=plgpu.CompilerParams(approx_math=True),
  )(indices, counts, q, k, v)
