// CUDA backward of the selective scan: du, ddelta, dz, and per-block partial sums of dA, dB, dC, dD,
// ddelta_bias (summed afterwards in a fixed order: deterministic, no atomics), plus dinitial_state.
//
// Grid as the forward (scan_common.cuh): x = channel block of R channels, y = batch * groups + g, z = time
// split. A block walks its split's tiles (== saved chunks) from last to first, carrying the adjoint
// g = dL/dh in registers. Per tile: (1) stage dt, u, dy = dout * silu(z) and B, C (loaded into registers
// during the previous tile, 16 bytes per access); then for the second half of the tile and then the first:
// (2) recompute the half's states from the saved chunk state, keeping every h_t in shared memory, and
// y = C.h; (3) dC[n,t] = sum over the block's channels of dy*h_t, read from shared memory (no shuffles);
// (4) reverse scan, each lane overwriting its h_t with g_t; (5) dB[n,t] = sum over channels of
// g_t*dt*u from shared memory; finally (6) du, ddelta, dz are written coalesced.
// With S > 1 time splits the adjoint entering each split comes from bwd_split.cuh.
// Packed rows (seq_idx): the decay of a step that starts a sequence is zero (stage_sequence_cuts), so
// neither the state flows forward nor the adjoint back across it, and dA, ddelta get nothing from it.
// Per-sequence states (cu_seqlens, the kSeqStates variant): the recompute loads a sequence's initial state
// before its first step, whose decay is kept (its h_{t-1} is that initial state); the reverse scan adds
// the gradient of a sequence's last state at its last step and, at its first step, stores the adjoint
// flowing out as that sequence's dinitial_state and carries zero on.
//
// Launched by bwd_launch.cuh, which also counts the instantiations.
#pragma once

#include <type_traits>

#include "selective_scan/bwd_channel_reduce.cuh"
#include "selective_scan/scan_common.cuh"

namespace mamba_ext::cuda {

inline size_t bwd_smem_bytes(const ScanLayout& l) {
  return sizeof(float) * (6 * l.R * kPitch + 2 * kTile * (l.n_pad + 4) + 2 * l.R * l.n_pad +
                          size_t(l.K) * kThreads * kHistPitch);
}


template <typename input_t, int K, bool kSeqStates>
__global__ void __launch_bounds__(kThreads, 3) bwd_kernel(SelectiveScanParams p, ScanLayout l, ScanWork w) {
  extern __shared__ float4 smem4[];
  const int R = l.R, bc_pitch = l.n_pad + 4, tid = threadIdx.x;
  float* dt_s = reinterpret_cast<float*>(smem4);  // [R][kPitch] each
  float* u_s = dt_s + R * kPitch;
  float* dy_s = u_s + R * kPitch;   // dL/dy (y = C.h + D u), i.e. dout * silu(z)
  float* y_s = dy_s + R * kPitch;   // C.h, for dz
  float* du_s = y_s + R * kPitch;
  float* ddt_s = du_s + R * kPitch; // dL/d(dt), before softplus'
  float* B_s = ddt_s + R * kPitch;  // [kTile][n_pad + 4]
  float* C_s = B_s + kTile * bc_pitch;
  float* Bk_s = C_s + kTile * bc_pitch;  // constant B, C: [R][n_pad]
  float* Ck_s = Bk_s + R * l.n_pad;
  float* hist = Ck_s + R * l.n_pad;      // [K][kThreads][kHistPitch]: h_t, then g_t, of each lane's states
  __shared__ __align__(16) float cut_s[kTile];  // -inf where a packed sequence starts, else 0
  __shared__ SequenceMarks marks_s;

  const Pos s = block_pos(p, l);
  const int64_t split = blockIdx.z, N = p.dstate, L = p.seqlen;
  const int64_t row = s.b * p.dim + s.d;
  const float D = p.D_ptr ? static_cast<const float*>(p.D_ptr)[s.d] : 0.f;

  float A[K], A2[K], g[K], dA[K], dBc[K], dCc[K];
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int n = s.p * K + k;
    const bool real = n < N && s.valid;
    A[k] = real ? static_cast<const float*>(p.A_ptr)[s.d * N + n] : 0.f;
    A2[k] = A[k] * kLog2e;
    g[k] = 0.f;
    if (real) {
      if (split < l.n_splits - 1) {
        g[k] = w.split_in[(row * l.n_splits + split) * N + n];
      } else if (p.dlast_state_ptr && !kSeqStates) {  // kSeqStates: added where each sequence ends
        g[k] = static_cast<const float*>(p.dlast_state_ptr)[row * N + n];
      }
    }
    dA[k] = dBc[k] = dCc[k] = 0.f;
  }
  stage_constant<K>(Bk_s, p.is_variable_B, p.B_ptr, s, l, N);
  stage_constant<K>(Ck_s, p.is_variable_C, p.C_ptr, s, l, N);
  zero_padded_bc(B_s, N, l);
  zero_padded_bc(C_s, N, l);
  const float* B_read = p.is_variable_B ? B_s + s.p * K : Bk_s + s.c * l.n_pad + s.p * K;
  const float* C_read = p.is_variable_C ? C_s + s.p * K : Ck_s + s.c * l.n_pad + s.p * K;
  const int B_step = p.is_variable_B ? bc_pitch : 0, C_step = p.is_variable_C ? bc_pitch : 0;

  // Load/store role: steps io_t .. io_t + 7 of row io_c; it also sums dD and ddelta_bias of its row.
  const bool io_row = s.io_c < s.nvalid;
  const float bias_io = (io_row && p.delta_bias_ptr) ? static_cast<const float*>(p.delta_bias_ptr)[s.dbase + s.io_c] : 0.f;
  const float D_io = (io_row && p.D_ptr) ? static_cast<const float*>(p.D_ptr)[s.dbase + s.io_c] : 0.f;
  float dD_io = 0.f, ddb_io = 0.f;
  const int64_t bc_part = ((s.b * p.n_groups + s.g) * l.n_cblocks + blockIdx.x) * N * L;

  Pack8<input_t> u_n, delta_n, dout_n, z_n, B_n, C_n;
  const auto prefetch = [&](int64_t chunk) {
    const int64_t t0 = chunk * kTile;
    const int len = tile_len(L, t0);
    const int n_ok = io_row ? seg_len(len, s.io_t) : 0;
    load8(u_n, io_ptr<input_t>(p.u_ptr, p.u_batch_stride, p.u_dim_stride, s, t0), n_ok, l.vec_io);
    load8(delta_n, io_ptr<input_t>(p.delta_ptr, p.delta_batch_stride, p.delta_dim_stride, s, t0), n_ok, l.vec_io);
    load8(dout_n, io_ptr<input_t>(p.dout_ptr, p.dout_batch_stride, p.dout_dim_stride, s, t0), n_ok, l.vec_io);
    if (p.z_ptr) load8(z_n, io_ptr<input_t>(p.z_ptr, p.z_batch_stride, p.z_dim_stride, s, t0), n_ok, l.vec_io);
    if (p.is_variable_B && s.io_c < N) {
      load_bc8(B_n, bc_ptr<input_t>(p.B_ptr, p.B_batch_stride, p.B_group_stride, s, t0), p.B_dstate_stride,
               s.io_c, len, s, l.vec_io);
    }
    if (p.is_variable_C && s.io_c < N) {
      load_bc8(C_n, bc_ptr<input_t>(p.C_ptr, p.C_batch_stride, p.C_group_stride, s, t0), p.C_dstate_stride,
               s.io_c, len, s, l.vec_io);
    }
  };

  const ChunkRange range = split_part_chunks(p, l, split, 0, 1);
  const int64_t chunk_begin = range.begin, chunk_end = range.end;
  if (chunk_begin < chunk_end) prefetch(chunk_end - 1);
  for (int64_t chunk = chunk_end - 1; chunk >= chunk_begin; --chunk) {
    const int64_t t0 = chunk * kTile;
    const int len = tile_len(L, t0);
    const int n_ok = io_row ? seg_len(len, s.io_t) : 0;

    // (1) Stage; keep u, dout, z and softplus' in registers for the final writes.
    const Pack8<input_t> u_c = u_n, dout_c = dout_n, z_c = z_n;
    float dsp_c[8];
    if (s.io_c < R) {
      float dt8[8], u8[8], dy8[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        u8[j] = to_float(u_c.v[j]);
        const float x = to_float(delta_n.v[j]) + bias_io;
        float dt = x;
        dsp_c[j] = 1.f;
        if (p.delta_softplus) softplus_and_grad(x, dt, dsp_c[j]);
        dt8[j] = j < n_ok ? dt : 0.f;  // padding: state and adjoint pass through unchanged
        const float dout = to_float(dout_c.v[j]);
        float dy = dout;
        if (p.z_ptr) {
          const float z = to_float(z_c.v[j]);
          dy *= z * sigmoid(z);
        }
        dy8[j] = dy;                   // zero on padding: u and dout load as zero there
        dD_io = fmaf(dy, u8[j], dD_io);
      }
      sts8(dt_s + s.io_c * kPitch + s.io_t, dt8);
      sts8(u_s + s.io_c * kPitch + s.io_t, u8);
      sts8(dy_s + s.io_c * kPitch + s.io_t, dy8);
    }
    if (p.is_variable_B) {
      stage_bc8(B_s, B_n, bc_ptr<input_t>(p.B_ptr, p.B_batch_stride, p.B_group_stride, s, t0), p.B_dstate_stride,
                N, len, s, l, l.vec_io);
    }
    if (p.is_variable_C) {
      stage_bc8(C_s, C_n, bc_ptr<input_t>(p.C_ptr, p.C_batch_stride, p.C_group_stride, s, t0), p.C_dstate_stride,
                N, len, s, l, l.vec_io);
    }
    float h0[K];
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int n = s.p * K + k;
      h0[k] = (s.valid && n < N) ? static_cast<const float*>(p.chunk_states_ptr)[(row * p.n_chunks + chunk) * N + n] : 0.f;
    }
    stage_sequence_cuts(cut_s, &marks_s, p, s, t0, len);
    __syncthreads();
    const SequenceMarks marks = marks_s;
    // kSeqStates: a sequence starts or ends in this tile, so the scans take the per-step tests (kMarked);
    // other tiles run without them.
    const bool marked_tile = kSeqStates && (marks.starts | marks.ends) != 0;
    if (chunk > chunk_begin) prefetch(chunk - 1);  // in flight during this tile's work

    const float* dt_row = dt_s + s.c * kPitch;
    const float* u_row = u_s + s.c * kPitch;
    const float* dy_row = dy_s + s.c * kPitch;
    // The adjoint flows backwards in time: the second half of the tile first.
    for (int half = 1; half >= 0; --half) {
      const int tb = half * kHalf;
      float h[K], hstart[K];  // hstart: the state entering the half (h_{t-1} of its first step)
#pragma unroll
      for (int k = 0; k < K; ++k) h[k] = h0[k];
      if (half == 1) {  // the state at the middle of the tile
        const auto advance_to_middle = [&](auto marked) {
          constexpr bool kMarked = decltype(marked)::value;
#pragma unroll 4
          for (int t = 0; t < kHalf; ++t) {
            const float dt = dt_row[t], dtu = dt * u_row[t], cut = cut_s[t];
            float Bv[K];
            read_states(Bv, B_read + t * B_step);
            if constexpr (kMarked) {
              if ((marks.starts >> t) & 1u) load_sequence_state(h, p, s, t0 + t);
            }
#pragma unroll
            for (int k = 0; k < K; ++k) h[k] = fmaf(ex2(fmaf(dt, A2[k], cut)), h[k], dtu * Bv[k]);
          }
        };
        if (marked_tile) advance_to_middle(std::true_type()); else advance_to_middle(std::false_type());
      }
#pragma unroll
      for (int k = 0; k < K; ++k) hstart[k] = h[k];

      // (2) Recompute the half's states into hist; y = C.h.
      const auto recompute = [&](auto marked) {
        constexpr bool kMarked = decltype(marked)::value;
#pragma unroll 1
        for (int t = tb; t < tb + kHalf; t += 4) {
          float dtv[4], uv[4], cutv[4];
          read_states(dtv, dt_row + t);
          read_states(uv, u_row + t);
          read_states(cutv, cut_s + t);
          float y[4];
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            float Bv[K], Cv[K];
            read_states(Bv, B_read + (t + j) * B_step);
            read_states(Cv, C_read + (t + j) * C_step);
            const float dtu = dtv[j] * uv[j];
            y[j] = 0.f;
            if constexpr (kMarked) {
              if ((marks.starts >> (t + j)) & 1u) load_sequence_state(h, p, s, t0 + t + j);
            }
#pragma unroll
            for (int k = 0; k < K; ++k) {
              h[k] = fmaf(ex2(fmaf(dtv[j], A2[k], cutv[j])), h[k], dtu * Bv[k]);
              hist[(k * kThreads + tid) * kHistPitch + t - tb + j] = h[k];
              y[j] = fmaf(Cv[k], h[k], y[j]);
            }
          }
          const float y_sum = sum_steps_over_lanes(y, s.p, l.P);  // step s.p % 4
          if (s.p < 4) y_s[s.c * kPitch + t + s.p] = y_sum;
        }
      };
      if (marked_tile) recompute(std::true_type()); else recompute(std::false_type());
      __syncthreads();

      // (3) dC from the states: over the block's channels when C is input-dependent, else over time in
      // each lane (its own history rows, so no barrier).
      if (p.is_variable_C) {
        channel_reduce<K, false>(w.dC_part + bc_part + t0, L, hist, dy_s, nullptr, s, l, N, len, tb);
        __syncthreads();  // (4) overwrites hist
      } else {
        for (int t = tb; t < tb + kHalf; ++t) {
#pragma unroll
          for (int k = 0; k < K; ++k) dCc[k] = fmaf(dy_row[t], hist[(k * kThreads + tid) * kHistPitch + t - tb], dCc[k]);
        }
      }

      // (4) Reverse scan over the half.
      const auto reverse_scan = [&](auto marked) {
        constexpr bool kMarked = decltype(marked)::value;
#pragma unroll 1
        for (int t = tb + kHalf - 4; t >= tb; t -= 4) {
          float dtv[4], uv[4], dyv[4], cutv[4];
          read_states(dtv, dt_row + t);
          read_states(uv, u_row + t);
          read_states(dyv, dy_row + t);
          read_states(cutv, cut_s + t);
          float s1[4], s2[4];  // sum_n dL/d(dt A_n) A_n and sum_n dL/dh_n B_n, per step
#pragma unroll
          for (int j = 3; j >= 0; --j) {
            float Bv[K], Cv[K];
            read_states(Bv, B_read + (t + j) * B_step);
            read_states(Cv, C_read + (t + j) * C_step);
            const float dt = dtv[j], dy = dyv[j];
            s1[j] = s2[j] = 0.f;
            const int col = t - tb + j;
            // kSeqStates: the step that starts a sequence decays its initial state, not the previous token's.
            const bool starts_here = kMarked && ((marks.starts >> (t + j)) & 1u);
            float h_init[K] = {};
            if constexpr (kMarked) {
              if ((marks.ends >> (t + j)) & 1u) add_sequence_state_grad(g, p, s, t0 + t + j);
              if (starts_here) load_sequence_state(h_init, p, s, t0 + t + j);
            }
#pragma unroll
            for (int k = 0; k < K; ++k) {
              float* hp = hist + (k * kThreads + tid) * kHistPitch + col;
              float h_prev = col > 0 ? hp[-1] : hstart[k];  // not yet overwritten: we walk backwards
              if (starts_here) h_prev = h_init[k];
              const float gk = fmaf(Cv[k], dy, g[k]);     // dL/dh_t
              const float g_prev = ex2(fmaf(dt, A2[k], cutv[j])) * gk;  // flows to h_{t-1}
              const float ga = g_prev * h_prev;           // dL/d(dt A_n) = g_t a_t h_{t-1}
              dA[k] = fmaf(ga, dt, dA[k]);
              s1[j] = fmaf(ga, A[k], s1[j]);
              s2[j] = fmaf(gk, Bv[k], s2[j]);
              *hp = gk;
              g[k] = g_prev;
            }
            if (starts_here) {  // the adjoint of the initial state; nothing flows into the previous sequence
              store_sequence_state(p.dinitial_state_ptr, g, p, s, t0 + t + j);
#pragma unroll
              for (int k = 0; k < K; ++k) g[k] = 0.f;
            }
          }
          // Lane p < 4 finishes step t + p.
          const float s1_sum = sum_steps_over_lanes(s1, s.p, l.P), s2_sum = sum_steps_over_lanes(s2, s.p, l.P);
          if (s.p < 4) {
            du_s[s.c * kPitch + t + s.p] = fmaf(s2_sum, pick_step(dtv, s.p), D * pick_step(dyv, s.p));
            ddt_s[s.c * kPitch + t + s.p] = fmaf(s2_sum, pick_step(uv, s.p), s1_sum);
          }
        }
      };
      if (marked_tile) reverse_scan(std::true_type()); else reverse_scan(std::false_type());
      __syncthreads();

      // (5) dB from the adjoints (constant B: over time in each lane).
      if (p.is_variable_B) {
        channel_reduce<K, true>(w.dB_part + bc_part + t0, L, hist, dt_s, u_s, s, l, N, len, tb);
      } else {
        for (int t = tb; t < tb + kHalf; ++t) {
          const float dtu = dt_row[t] * u_row[t];
#pragma unroll
          for (int k = 0; k < K; ++k) dBc[k] = fmaf(dtu, hist[(k * kThreads + tid) * kHistPitch + t - tb], dBc[k]);
        }
      }
      if (half == 1) __syncthreads();  // the first half's recompute overwrites hist
    }

    // (6) du, ddelta, dz of the whole tile.
    if (n_ok > 0) {
      float du8[8], ddt8[8], y8[8];
      lds8(du8, du_s + s.io_c * kPitch + s.io_t);
      lds8(ddt8, ddt_s + s.io_c * kPitch + s.io_t);
      lds8(y8, y_s + s.io_c * kPitch + s.io_t);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        ddt8[j] *= dsp_c[j];
        if (j < n_ok) ddb_io += ddt8[j];
        if (p.z_ptr) {
          const float z = to_float(z_c.v[j]), sg = sigmoid(z);
          const float yf = fmaf(D_io, to_float(u_c.v[j]), y8[j]);
          y8[j] = to_float(dout_c.v[j]) * yf * sg * (1.f + z * (1.f - sg));
        }
      }
      const int64_t at = (s.b * p.dim + s.dbase + s.io_c) * L + t0 + s.io_t;
      store8(static_cast<input_t*>(p.du_ptr) + at, du8, n_ok, l.vec_io);
      store8(static_cast<input_t*>(p.ddelta_ptr) + at, ddt8, n_ok, l.vec_io);
      if (p.z_ptr) store8(static_cast<input_t*>(p.dz_ptr) + at, y8, n_ok, l.vec_io);
    }
    __syncthreads();  // the next tile's staging overwrites the shared arrays
  }

  const int64_t part = (s.b * l.n_splits + split) * p.dim;
  // Row sums of the load/store role: over its four threads (consecutive lanes).
  for (int off = 1; off < 4; off <<= 1) {
    dD_io += __shfl_xor_sync(0xffffffffu, dD_io, off);
    ddb_io += __shfl_xor_sync(0xffffffffu, ddb_io, off);
  }
  if (io_row && s.io_t == 0) {
    w.dD_part[part + s.dbase + s.io_c] = dD_io;
    w.ddelta_bias_part[part + s.dbase + s.io_c] = ddb_io;
  }
  if (!s.valid) return;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int n = s.p * K + k;
    if (n >= N) continue;
    w.dA_part[(part + s.d) * N + n] = dA[k];
    if (!p.is_variable_B) w.dB_part[(part + s.d) * N + n] = dBc[k];
    if (!p.is_variable_C) w.dC_part[(part + s.d) * N + n] = dCc[k];
    if (split == 0 && !kSeqStates) static_cast<float*>(p.dinitial_state_ptr)[row * N + n] = g[k];
  }
}

}  // namespace mamba_ext::cuda
