"""GPU kernels (Pallas Mosaic GPU, Hopper): block-sparse flash attention forward and backward.

Every kernel is one warp-specialised CTA (``warp_specialized``): a memory warpgroup walks the
CTA's selection row with scalar loads and TMA-copies only the selected tiles into rings of
shared-memory slots, so unselected blocks are never loaded; two compute warpgroups own 64 rows
each of the CTA's 128-row tile (one selection block) and consume the rings with ``wgmma`` from
shared memory and softmax math in registers.

Forward (grid: query tile x query head x batch): the FlashAttention-3 schedule; a schedule
barrier alternates the two compute warpgroups so one's softmax overlaps the other's matmuls.
dQ (same grid): walks the same selected key tiles. dK/dV (grid: key tile x KV head x batch):
walks the transposed selection (the query blocks that chose this key block) for every query
head of the GQA group, so each K/V tile is read once and dK/dV leave the kernel summed over the
group. Causal, key-padding and segment-id masks are applied per tile when the call has them
(the streamed side's segment ids travel in a ring of their own).
"""

from __future__ import annotations

import jax
import jax.experimental.pallas.mosaic_gpu as plgpu
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels.sparse_attention import tile
from pallas_kernels.sparse_attention import warp_specialized as ws
from pallas_kernels.sparse_attention.config import AttentionSpec
from pallas_kernels.sparse_attention.selection import transposed_selection
from pallas_kernels.sparse_attention.warp_specialized import COMPUTE_WGS, CTA_ROWS, WG_ROWS

LN2 = 0.6931471805599453
BWD_TILE = 64  # keys (dQ) or queries (dK/dV) per backward step: keeps the f32 tiles in registers


def unsupported(spec: AttentionSpec, dtypes, head_dim: int) -> str | None:
  """Why these kernels cannot run the call (None if they can): the text of a ConfigError.

  ``dtypes``: those of q, k, v. Head sizes above 128 would not fit the K/V rings in shared
  memory nor the float32 tiles in registers.
  """
  device = jax.devices()[0]
  if device.platform != "gpu" or getattr(device, "compute_capability", "") != "9.0":
    return "a Hopper GPU (sm_90) for wgmma/TMA; use 'triton' or 'xla' elsewhere"
  names = sorted({jnp.dtype(t).name for t in dtypes})
  if names not in (["bfloat16"], ["float16"]):
    return f"q, k, v all bfloat16 or all float16 (got {names}); 'triton' runs float32"
  if head_dim not in (64, 128):
    return f"head_dim 64 or 128 (got {head_dim})"
  if spec.block_q % CTA_ROWS or spec.block_k % CTA_ROWS:
    return (f"selection blocks that are multiples of {CTA_ROWS} "
            f"(got block_q={spec.block_q}, block_k={spec.block_k})")
  return None


def _key_tiles(spec: AttentionSpec, idx_ref, cnt_ref, tile_k: int):
  """A (query tile, head, batch) CTA's walk over its selected key tiles, ``tile_k`` per step.

  Returns ``((batch, head, query tile), steps, k_start(step), kv_rows(start))``: the number of
  steps, a step's first key and the K/V rows from a first key as a GMEM index.
  """
  bi, h, qt = lax.axis_index("batch"), lax.axis_index("heads"), lax.axis_index("q_tiles")
  row = ws.selection_row(spec, bi, h, lax.div(qt, jnp.int32(spec.block_q // CTA_ROWS)))
  kv_head = lax.div(h, jnp.int32(spec.kv_group))
  k_start = lambda step: ws.piece_start(idx_ref, row, step, spec.block_k, tile_k)
  kv_rows = lambda start: (bi, pl.ds(start, tile_k), kv_head)
  return (bi, h, qt), cnt_ref[row] * (spec.block_k // tile_k), k_start, kv_rows


def forward(q, k, v, indices, counts, q_seg, kv_seg, spec: AttentionSpec):
  """Padded ``q [B, Sq', Hq, D]``, ``k, v [B, Sk', Hkv, D]`` -> ``(out, lse [B, Hq, Sq'])``."""
  b, sqp, hq, d = q.shape
  dtype = q.dtype
  size = jnp.dtype(dtype).itemsize
  tile_k = CTA_ROWS
  slots = ws.ring_slots(spec, COMPUTE_WGS * WG_ROWS * (d * size + 8),
                        tile_k * (2 * d * size + 4 * spec.segments))
  segs = ws.Segments(slots, tile_k) if spec.segments else None
  use_mask = ws.masked(spec)
  scale2 = spec.scale * tile.LOG2E  # scores in the base-2 domain, for exp2

  def body(idx_ref, cnt_ref, q_ref, k_ref, v_ref, *refs):
    (qseg_ref, kvseg_ref), refs = (refs[:2], refs[2:]) if segs else ((None, None), refs)
    out_ref, lse_ref, smem, barriers = refs
    qo_smem2, k_smem, v_smem, lse_smem2 = smem[:4]
    k_loaded, v_loaded, q_loaded, k_free, v_free, turn = barriers[:6]
    seg_refs = (smem[4:], barriers[6:])
    (bi, h, qt), steps, k_start, kv_rows = _key_tiles(spec, idx_ref, cnt_ref, tile_k)

    def take_turn():
      plgpu.barrier_arrive(turn)
      plgpu.barrier_wait(turn)

    def compute(wg):
      qo_smem, lse_smem = qo_smem2.at[wg], lse_smem2.at[wg]
      q_base = qt * CTA_ROWS + wg * WG_ROWS
      plgpu.copy_gmem_to_smem(q_ref.at[bi, pl.ds(q_base, WG_ROWS), h], qo_smem,
                              q_loaded.at[wg])
      plgpu.barrier_wait(q_loaded.at[wg])
      row_seg = (segs.rows(seg_refs, wg, qseg_ref.at[bi, pl.ds(q_base, WG_ROWS)])
                 if segs else None)

      @pl.when(steps > 0)
      def _():
        plgpu.barrier_wait(k_loaded.at[0])

      pl.when(wg == 1)(take_turn)

      def step_fn(step, carry):
        acc, m, l = carry
        slot = lax.rem(step, jnp.int32(slots))

        def qk(acc_ref):
          plgpu.wgmma(acc_ref, qo_smem, k_smem.at[slot].T)
          take_turn()
          return acc_ref[...]

        s = pl.run_scoped(qk, plgpu.ACC((WG_ROWS, tile_k), jnp.float32))
        plgpu.barrier_arrive(k_free.at[slot])
        if use_mask:
          col_seg = segs.cols(seg_refs, slot) if segs else None
          s = ws.mask_tile(s, -jnp.inf, spec, q_base, k_start(step), row_seg, col_seg)
        m_new = jnp.maximum(m, s.max(axis=1) * scale2)
        # Only a mask can leave a row's max at -inf; exp2 then needs a finite offset.
        m_use = jnp.where(m_new == -jnp.inf, 0.0, m_new) if use_mask else m_new
        alpha = jnp.exp2(m - m_use)
        p = jnp.exp2(s * scale2 - lax.broadcast_in_dim(m_use, s.shape, [0]))
        acc *= lax.broadcast_in_dim(alpha, acc.shape, [0])
        l *= alpha
        l += p.sum(axis=1)
        p16 = p.astype(dtype)
        # Pin the softmax before the hand-over (the order FlashAttention-3 found fastest).
        acc, l, m_new, p16 = lax.optimization_barrier((acc, l, m_new, p16))
        plgpu.barrier_arrive(turn)  # softmax done
        plgpu.barrier_wait(v_loaded.at[slot])
        plgpu.barrier_wait(turn)  # the other warpgroup's matmuls are issued

        def pv(acc_ref):
          plgpu.wgmma(acc_ref, p16, v_smem.at[slot])
          nxt = step + 1

          @pl.when(nxt < steps)
          def _():
            plgpu.barrier_wait(k_loaded.at[lax.rem(nxt, jnp.int32(slots))])

        acc = pl.run_state(pv)(plgpu.ACC.init(acc))
        plgpu.barrier_arrive(v_free.at[slot])
        return acc, m_new, l

      init = (ws.zeros_acc((WG_ROWS, d)), ws.row_vector(-jnp.inf), ws.row_vector(0.0))
      acc, m, l = lax.fori_loop(0, steps, step_fn, init)
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

    rings = (ws.Ring(lambda start: k_ref.at[kv_rows(start)], k_smem, k_loaded, k_free),
             ws.Ring(lambda start: v_ref.at[kv_rows(start)], v_smem, v_loaded, v_free))
    if segs:
      rings += (segs.ring(seg_refs, lambda start: kvseg_ref.at[bi, pl.ds(start, tile_k)]),)
    ws.specialize(compute, lambda: ws.stream(steps, slots, rings, k_start))

  smem = (ws.swizzled((COMPUTE_WGS, WG_ROWS, d), dtype), ws.swizzled((slots, tile_k, d), dtype),
          ws.swizzled((slots, tile_k, d), dtype),
          plgpu.SMEM((COMPUTE_WGS, WG_ROWS), jnp.float32))
  barriers = (plgpu.Barrier(num_barriers=slots), plgpu.Barrier(num_barriers=slots),
              plgpu.Barrier(num_barriers=COMPUTE_WGS),
              plgpu.Barrier(num_arrivals=COMPUTE_WGS, num_barriers=slots),
              plgpu.Barrier(num_arrivals=COMPUTE_WGS, num_barriers=slots),
              plgpu.Barrier(num_arrivals=COMPUTE_WGS))
  out_type = [jax.ShapeDtypeStruct(q.shape, dtype),
              jax.ShapeDtypeStruct((b, hq, sqp), jnp.float32)]
  return ws.launch(body, (indices, counts, q, k, v) + ((q_seg, kv_seg) if segs else ()),
                 out_type, (hq, sqp // CTA_ROWS, b), ("heads", "q_tiles", "batch"),
                 smem + (segs.smem if segs else ()), barriers + (segs.barriers if segs else ()))


def _dq(q, k, v, dout, lse2, delta, indices, counts, q_seg, kv_seg, spec: AttentionSpec):
  """dQ ``[B, Sq', Hq, D]``: per query tile, the selected key tiles (as in the forward)."""
  b, sqp, hq, d = q.shape
  dtype = q.dtype
  size = jnp.dtype(dtype).itemsize
  slots = ws.ring_slots(spec, COMPUTE_WGS * WG_ROWS * (2 * d * size + 12),
                        BWD_TILE * (2 * d * size + 4 * spec.segments))
  segs = ws.Segments(slots, BWD_TILE) if spec.segments else None
  use_mask = ws.masked(spec)
  scale2 = spec.scale * tile.LOG2E

  def body(idx_ref, cnt_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, *refs):
    (qseg_ref, kvseg_ref), refs = (refs[:2], refs[2:]) if segs else ((None, None), refs)
    dq_ref, smem, barriers = refs
    q_smem2, do_smem2, lse_smem2, delta_smem2, k_smem, v_smem = smem[:6]
    own_loaded, k_loaded, v_loaded, k_free, v_free = barriers[:5]
    seg_refs = (smem[6:], barriers[5:])
    (bi, h, qt), steps, k_start, kv_rows = _key_tiles(spec, idx_ref, cnt_ref, BWD_TILE)

    def compute(wg):
      q_smem, do_smem = q_smem2.at[wg], do_smem2.at[wg]
      q_base = qt * CTA_ROWS + wg * WG_ROWS
      rows = (bi, pl.ds(q_base, WG_ROWS), h)
      vec = (bi, h, pl.ds(q_base, WG_ROWS))
      copies = ((q_ref.at[rows], q_smem), (do_ref.at[rows], do_smem),
                (lse_ref.at[vec], lse_smem2.at[wg]), (delta_ref.at[vec], delta_smem2.at[wg]))
      for i, (src, dst) in enumerate(copies):
        plgpu.copy_gmem_to_smem(src, dst, own_loaded.at[i * COMPUTE_WGS + wg])
      for i in range(len(copies)):
        plgpu.barrier_wait(own_loaded.at[i * COMPUTE_WGS + wg])
      lse2 = ws.load_vector(lse_smem2.at[wg], plgpu.Layout.WGMMA.reduce(1))
      delta = ws.load_vector(delta_smem2.at[wg], plgpu.Layout.WGMMA.reduce(1))
      row_seg = (segs.rows(seg_refs, wg, qseg_ref.at[bi, pl.ds(q_base, WG_ROWS)])
                 if segs else None)

      def step_fn(step, dq):
        slot = lax.rem(step, jnp.int32(slots))
        plgpu.barrier_wait(k_loaded.at[slot])

        s = ws.matmul(q_smem, k_smem.at[slot].T, (WG_ROWS, BWD_TILE))
        p = jnp.exp2(s * scale2 - lax.broadcast_in_dim(lse2, s.shape, [0]))
        if use_mask:
          col_seg = segs.cols(seg_refs, slot) if segs else None
          p = ws.mask_tile(p, 0.0, spec, q_base, k_start(step), row_seg, col_seg)
        plgpu.barrier_wait(v_loaded.at[slot])

        dp = ws.matmul(do_smem, v_smem.at[slot].T, (WG_ROWS, BWD_TILE))
        plgpu.barrier_arrive(v_free.at[slot])
        ds = p * (dp - lax.broadcast_in_dim(delta, dp.shape, [0]))

        dq = ws.matmul_add(dq, ds.astype(dtype), k_smem.at[slot])
        plgpu.barrier_arrive(k_free.at[slot])
        return dq

      dq = lax.fori_loop(0, steps, step_fn, ws.zeros_acc((WG_ROWS, d)))
      q_smem[...] = (dq * spec.scale).astype(dtype)
      plgpu.commit_smem()
      plgpu.copy_smem_to_gmem(q_smem, dq_ref.at[rows])
      plgpu.wait_smem_to_gmem(0)

    rings = (ws.Ring(lambda start: k_ref.at[kv_rows(start)], k_smem, k_loaded, k_free),
             ws.Ring(lambda start: v_ref.at[kv_rows(start)], v_smem, v_loaded, v_free))
    if segs:
      rings += (segs.ring(seg_refs, lambda start: kvseg_ref.at[bi, pl.ds(start, BWD_TILE)]),)
    ws.specialize(compute, lambda: ws.stream(steps, slots, rings, k_start))

  smem = (ws.swizzled((COMPUTE_WGS, WG_ROWS, d), dtype),
          ws.swizzled((COMPUTE_WGS, WG_ROWS, d), dtype),
          plgpu.SMEM((COMPUTE_WGS, WG_ROWS), jnp.float32),
          plgpu.SMEM((COMPUTE_WGS, WG_ROWS), jnp.float32),
          ws.swizzled((slots, BWD_TILE, d), dtype), ws.swizzled((slots, BWD_TILE, d), dtype))
  barriers = (plgpu.Barrier(num_barriers=4 * COMPUTE_WGS),
              plgpu.Barrier(num_barriers=slots), plgpu.Barrier(num_barriers=slots),
              plgpu.Barrier(num_arrivals=COMPUTE_WGS, num_barriers=slots),
              plgpu.Barrier(num_arrivals=COMPUTE_WGS, num_barriers=slots))
  return ws.launch(body, (indices, counts, q, k, v, dout, lse2, delta)
                 + ((q_seg, kv_seg) if segs else ()),
                 jax.ShapeDtypeStruct(q.shape, dtype), (hq, sqp // CTA_ROWS, b),
                 ("heads", "q_tiles", "batch"), smem + (segs.smem if segs else ()),
                 barriers + (segs.barriers if segs else ()))


def _dkv(q, k, v, dout, lse2, delta, t_indices, t_counts, q_seg, kv_seg, spec: AttentionSpec):
  """dK, dV ``[B, Sk', Hkv, D]``: per key tile, the query tiles of every head in its group."""
  b, skp, hkv, d = k.shape
  dtype = k.dtype
  size = jnp.dtype(dtype).itemsize
  group = spec.kv_group
  per_block = spec.block_q // BWD_TILE
  slots = ws.ring_slots(spec, COMPUTE_WGS * WG_ROWS * (2 * d * size + 4),
                        BWD_TILE * (2 * d * size + 8 + 4 * spec.segments))
  segs = ws.Segments(slots, BWD_TILE) if spec.segments else None
  use_mask = ws.masked(spec, keys_are_rows=True)
  scale2 = spec.scale * tile.LOG2E

  def body(idx_ref, cnt_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, *refs):
    (qseg_ref, kvseg_ref), refs = (refs[:2], refs[2:]) if segs else ((None, None), refs)
    dk_ref, dv_ref, smem, barriers = refs
    k_smem2, v_smem2, q_smem, do_smem, lse_smem, delta_smem = smem[:6]
    own_loaded, loaded, free = barriers[0], barriers[1:5], barriers[5:9]
    seg_refs = (smem[6:], barriers[9:])
    bi, kvh, kt = lax.axis_index("batch"), lax.axis_index("heads"), lax.axis_index("k_tiles")
    kb = lax.div(kt, jnp.int32(spec.block_k // CTA_ROWS))
    heads = [kvh * group + g for g in range(group)]
    rows = [ws.selection_row(spec, bi, h, kb) for h in heads]
    ends, total = [], jnp.int32(0)
    for r in rows:  # each head's steps follow the previous head's
      total = total + cnt_ref[r] * per_block
      ends.append(total)

    def locate(step):
      """(query head, first query row) of a step."""
      head, local = heads[0], step
      for g in range(1, group):
        later = step >= ends[g - 1]
        head = jnp.where(later, heads[g], head)
        local = jnp.where(later, step - ends[g - 1], local)
      sel_row = ws.selection_row(spec, bi, head, kb)
      return head, ws.piece_start(idx_ref, sel_row, local, spec.block_q, BWD_TILE)

    q_rows = lambda head, start: (bi, pl.ds(start, BWD_TILE), head)
    q_vec = lambda head, start: (bi, head, pl.ds(start, BWD_TILE))

    def compute(wg):
      k_smem, v_smem = k_smem2.at[wg], v_smem2.at[wg]
      k_base = kt * CTA_ROWS + wg * WG_ROWS
      kv_rows = (bi, pl.ds(k_base, WG_ROWS), kvh)
      plgpu.copy_gmem_to_smem(k_ref.at[kv_rows], k_smem, own_loaded.at[wg])
      plgpu.copy_gmem_to_smem(v_ref.at[kv_rows], v_smem, own_loaded.at[COMPUTE_WGS + wg])
      plgpu.barrier_wait(own_loaded.at[wg])
      plgpu.barrier_wait(own_loaded.at[COMPUTE_WGS + wg])
      row_seg = (segs.rows(seg_refs, wg, kvseg_ref.at[bi, pl.ds(k_base, WG_ROWS)])
                 if segs else None)
      q_loaded, do_loaded, lse_loaded, delta_loaded = loaded
      q_free, do_free, lse_free, delta_free = free

      def step_fn(step, carry):
        dk, dv = carry
        slot = lax.rem(step, jnp.int32(slots))
        plgpu.barrier_wait(q_loaded.at[slot])

        s_t = ws.matmul(k_smem, q_smem.at[slot].T, (WG_ROWS, BWD_TILE))
        plgpu.barrier_wait(lse_loaded.at[slot])
        lse2 = ws.load_vector(lse_smem.at[slot], plgpu.Layout.WGMMA.reduce(0))
        plgpu.barrier_arrive(lse_free.at[slot])
        p_t = jnp.exp2(s_t * scale2 - lax.broadcast_in_dim(lse2, s_t.shape, [1]))
        if use_mask:
          col_seg = segs.cols(seg_refs, slot) if segs else None
          p_t = ws.mask_tile(p_t, 0.0, spec, locate(step)[1], k_base, row_seg, col_seg,
                           keys_are_rows=True)
        plgpu.barrier_wait(do_loaded.at[slot])

        def dv_and_dp(refs):  # one wgmma wait for both products
          dv_ref_, dp_ref_ = refs
          plgpu.wgmma(dv_ref_, p_t.astype(dtype), do_smem.at[slot])
          plgpu.wgmma(dp_ref_, v_smem, do_smem.at[slot].T)

        dv, dp_t = pl.run_state(dv_and_dp)((plgpu.ACC.init(dv),
                                            plgpu.ACC.init(ws.zeros_acc((WG_ROWS, BWD_TILE)))))
        plgpu.barrier_arrive(do_free.at[slot])
        plgpu.barrier_wait(delta_loaded.at[slot])
        delta = ws.load_vector(delta_smem.at[slot], plgpu.Layout.WGMMA.reduce(0))
        plgpu.barrier_arrive(delta_free.at[slot])
        ds_t = p_t * (dp_t - lax.broadcast_in_dim(delta, dp_t.shape, [1]))

        dk = ws.matmul_add(dk, ds_t.astype(dtype), q_smem.at[slot])
        plgpu.barrier_arrive(q_free.at[slot])
        return dk, dv

      init = (ws.zeros_acc((WG_ROWS, d)), ws.zeros_acc((WG_ROWS, d)))
      dk, dv = lax.fori_loop(0, total, step_fn, init)
      k_smem[...] = (dk * spec.scale).astype(dtype)
      v_smem[...] = dv.astype(dtype)
      plgpu.commit_smem()
      plgpu.copy_smem_to_gmem(k_smem, dk_ref.at[kv_rows])
      plgpu.copy_smem_to_gmem(v_smem, dv_ref.at[kv_rows])
      plgpu.wait_smem_to_gmem(0)

    sources = (lambda at: q_ref.at[q_rows(*at)], lambda at: do_ref.at[q_rows(*at)],
               lambda at: lse_ref.at[q_vec(*at)], lambda at: delta_ref.at[q_vec(*at)])
    rings = tuple(ws.Ring(src, buf, ld, fr) for src, buf, ld, fr in
                  zip(sources, (q_smem, do_smem, lse_smem, delta_smem), loaded, free))
    if segs:
      rings += (segs.ring(seg_refs, lambda at: qseg_ref.at[bi, pl.ds(at[1], BWD_TILE)]),)
    ws.specialize(compute, lambda: ws.stream(total, slots, rings, locate))

  smem = (ws.swizzled((COMPUTE_WGS, WG_ROWS, d), dtype),
          ws.swizzled((COMPUTE_WGS, WG_ROWS, d), dtype),
          ws.swizzled((slots, BWD_TILE, d), dtype), ws.swizzled((slots, BWD_TILE, d), dtype),
          plgpu.SMEM((slots, BWD_TILE), jnp.float32), plgpu.SMEM((slots, BWD_TILE), jnp.float32))
  barriers = ((plgpu.Barrier(num_barriers=2 * COMPUTE_WGS),)
              + (plgpu.Barrier(num_barriers=slots),) * 4
              + (plgpu.Barrier(num_arrivals=COMPUTE_WGS, num_barriers=slots),) * 4)
  grads = jax.ShapeDtypeStruct(k.shape, dtype)
  return ws.launch(body, (t_indices, t_counts, q, k, v, dout, lse2, delta)
                 + ((q_seg, kv_seg) if segs else ()), [grads, grads],
                 (hkv, skp // CTA_ROWS, b), ("heads", "k_tiles", "batch"),
                 smem + (segs.smem if segs else ()), barriers + (segs.barriers if segs else ()))


def backward(q, k, v, out, lse, dout, indices, counts, q_seg, kv_seg, spec: AttentionSpec):
  """Padded inputs as in ``forward``; returns ``(dq, dk, dv)`` in the inputs' dtypes."""
  delta = jnp.einsum("bqhd,bqhd->bhq", out.astype(jnp.float32), dout.astype(jnp.float32))
  lse2 = tile.base2_lse(lse)
  dq = _dq(q, k, v, dout, lse2, delta, indices, counts, q_seg, kv_seg, spec)
  t_indices, t_counts = transposed_selection(indices, counts, k.shape[1] // spec.block_k)
  dk, dv = _dkv(q, k, v, dout, lse2, delta, t_indices, t_counts, q_seg, kv_seg, spec)
  return dq, dk, dv
