// Time splits of the CUDA backward (bwd_kernel.cuh): the zero-start adjoint pass and the chain that
// connects the splits. The adjoint obeys g_t = C_t dy_t + exp(dt_{t+1} A) g_{t+1}, linear in what flows in
// from the right, so each split but the first is first run from a zero adjoint (bwd_local_kernel, which
// needs no states and so no recompute), in consecutive parts that fill the GPU in whole rounds (set_local_parts),
// bwd_combine_kernel chains the parts from the end (a part's total decay is exp(A * sum dt)), and the full
// backward starts each split from the adjoint leaving the next one. In packed rows a part scans only up to
// its first sequence start, and nothing when an earlier part of its split holds one (packed_parts.cuh).
// Grid as the backward; z = (split - 1) * local_parts + part.
//
// Per-sequence states (kSeqStates, see bwd_kernel.cuh): the gradient of a sequence's last state enters at
// its last step, and nothing flows out of a sequence's first step.
//
// Instantiations: 3 input dtypes x K in {4, 8} x kSeqStates = 12 of bwd_local_kernel, 2 of the combine kernel.
#pragma once

#include "selective_scan/packed_parts.cuh"
#include "selective_scan/scan_common.cuh"

namespace mamba_ext::cuda {

inline size_t bwd_local_smem_bytes(const ScanLayout& l) {
  return sizeof(float) * (2 * l.R * kPitch + kTile * (l.n_pad + 4) + l.R * l.n_pad);
}

// Zero-start adjoint of one part of split 1 + blockIdx.z / local_parts (every split but the first): what it
// passes to the part before it when nothing flows in from the right. Needs no states, so no recompute.
template <typename input_t, int K, bool kSeqStates>
__global__ void __launch_bounds__(kThreads, local_min_blocks(sizeof(input_t), K, kSeqStates))
bwd_local_kernel(SelectiveScanParams p, ScanLayout l, ScanWork w) {
  extern __shared__ float4 smem4[];
  const int R = l.R, bc_pitch = l.n_pad + 4;
  float* dt_s = reinterpret_cast<float*>(smem4);
  float* dy_s = dt_s + R * kPitch;
  float* C_s = dy_s + R * kPitch;           // [kTile][n_pad + 4]
  float* Ck_s = C_s + kTile * bc_pitch;     // constant C: [R][n_pad]
  __shared__ __align__(16) float cut_s[kTile];  // -inf where a packed sequence starts, else 0
  __shared__ SequenceMarks marks_s;

  const Pos s = block_pos(p, l);
  const int64_t split = 1 + blockIdx.z / l.local_parts, part = blockIdx.z % l.local_parts, N = p.dstate;
  const int64_t row = s.b * p.dim + s.d;
  float A2[K], g[K];
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int n = s.p * K + k;
    A2[k] = (n < N && s.valid) ? static_cast<const float*>(p.A_ptr)[s.d * N + n] * kLog2e : 0.f;
    g[k] = 0.f;
  }
  stage_constant<K>(Ck_s, p.is_variable_C, p.C_ptr, s, l, N);
  zero_padded_bc(C_s, N, l);
  const float* C_read = p.is_variable_C ? C_s + s.p * K : Ck_s + s.c * l.n_pad + s.p * K;
  const int C_step = p.is_variable_C ? bc_pitch : 0;
  const bool io_row = s.io_c < s.nvalid;
  const float bias_io = (io_row && p.delta_bias_ptr) ? static_cast<const float*>(p.delta_bias_ptr)[s.dbase + s.io_c] : 0.f;

  float dtsum = 0.f;
  bool cut = false;  // a sequence starts inside the split: no adjoint flows through it
  // Packed rows: up to the part's first sequence start (packed_parts.cuh).
  const ChunkRange all = split_part_chunks(p, l, split, part, l.local_parts);
  const ChunkRange range = backward_part_chunks(p, l, s.b, split, all);
  // 32-bit chunk indices (seqlen / kTile < 2^31): the bounds stay in registers at the 64-register cap.
  const int chunk_begin = int(range.begin), chunk_end = int(range.end);
  for (int chunk = chunk_end - 1; chunk >= chunk_begin; --chunk) {
    const int64_t t0 = int64_t(chunk) * kTile;
    const int len = tile_len(p.seqlen, t0);
    const int n_ok = io_row ? seg_len(len, s.io_t) : 0;
    Pack8<input_t> delta_n, dout_n, z_n, C_n;
    load8(delta_n, io_ptr<input_t>(p.delta_ptr, p.delta_batch_stride, p.delta_dim_stride, s, t0), n_ok, l.vec_io);
    load8(dout_n, io_ptr<input_t>(p.dout_ptr, p.dout_batch_stride, p.dout_dim_stride, s, t0), n_ok, l.vec_io);
    if (p.z_ptr) load8(z_n, io_ptr<input_t>(p.z_ptr, p.z_batch_stride, p.z_dim_stride, s, t0), n_ok, l.vec_io);
    if (p.is_variable_C) {
      const input_t* C_ptr = bc_ptr<input_t>(p.C_ptr, p.C_batch_stride, p.C_group_stride, s, t0);
      if (s.io_c < N) load_bc8(C_n, C_ptr, p.C_dstate_stride, s.io_c, len, s, l.vec_io);
      stage_bc8(C_s, C_n, C_ptr, p.C_dstate_stride, N, len, s, l, l.vec_io);
    }
    if (s.io_c < R) {
      float dt8[8], dy8[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float x = to_float(delta_n.v[j]) + bias_io;
        float dt = x, dsp;
        if (p.delta_softplus) softplus_and_grad(x, dt, dsp);
        dt8[j] = j < n_ok ? dt : 0.f;
        dy8[j] = to_float(dout_n.v[j]);
        if (p.z_ptr) {
          const float z = to_float(z_n.v[j]);
          dy8[j] *= z * sigmoid(z);
        }
      }
      sts8(dt_s + s.io_c * kPitch + s.io_t, dt8);
      sts8(dy_s + s.io_c * kPitch + s.io_t, dy8);
    }
    stage_sequence_cuts(cut_s, &marks_s, p, s, t0, len);
    __syncthreads();
    const SequenceMarks marks = marks_s;
    cut = cut || marks.starts != 0;
    for (int t = kTile - 1; t >= 0; --t) {
      const float dt = dt_s[s.c * kPitch + t], dy = dy_s[s.c * kPitch + t], cut_t = cut_s[t];
      dtsum += dt;
      float Cv[K];
      read_states(Cv, C_read + t * C_step);
      if constexpr (kSeqStates) {
        if ((marks.ends >> t) & 1u) add_sequence_state_grad(g, p, s, t0 + t);
      }
#pragma unroll
      for (int k = 0; k < K; ++k) g[k] = ex2(fmaf(dt, A2[k], cut_t)) * fmaf(Cv[k], dy, g[k]);
      if constexpr (kSeqStates) {
        if ((marks.starts >> t) & 1u) {
#pragma unroll
          for (int k = 0; k < K; ++k) g[k] = 0.f;
        }
      }
    }
    __syncthreads();
  }
  if (!s.valid) return;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int n = s.p * K + k;
    if (n < N) w.split_local[split_part_slot(l, row, split, part) * N + n] = g[k];
  }
  if (s.p == 0) w.split_dtsum[split_part_slot(l, row, split, part)] = split_dtsum_or_cut(dtsum, cut);
}

// Adjoint leaving each split to the left: q_{S-1} = dlast_state, and q_{s-1} is q_s carried through split s's
// parts from the last to the first, each adding its zero-start adjoint to q decayed by exp(A * sum dt).
// A flat, unrolled walk over aliasing-free arrays, as fwd_combine_kernel.
template <bool kSeqStates>
__global__ void bwd_combine_kernel(SelectiveScanParams p, ScanLayout l, ScanWork w) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t N = p.dstate;
  if (i >= p.batch * p.dim * N) return;
  const int64_t row = i / N, n = i % N, d = row % p.dim, parts = l.local_parts;
  const float* __restrict__ dtsums = w.split_dtsum + split_part_slot(l, row, 0, 0);  // (split, part) of this row
  const float* __restrict__ locals = w.split_local + split_part_slot(l, row, 0, 0) * N + n;
  float* __restrict__ split_in = w.split_in + row * l.n_splits * N + n;
  const float A2 = static_cast<const float*>(p.A_ptr)[d * N + n] * kLog2e;
  // Per-sequence states: the last split's full pass adds the last sequence's gradient at its last step.
  float q = p.dlast_state_ptr && !kSeqStates ? static_cast<const float*>(p.dlast_state_ptr)[i] : 0.f;
  int64_t split = l.n_splits - 1;
  split_in[split * N] = q;
  int64_t part = parts;
#pragma unroll 8
  for (int64_t at = l.n_splits * parts - 1; at >= parts; --at) {  // splits S-1 .. 1; the first has no pass
    q = locals[at * N] + split_decay(A2, dtsums[at]) * q;
    if (--part == 0) {  // split `split` done: q leaves it to the left
      part = parts;
      split_in[--split * N] = q;
    }
  }
}

}  // namespace mamba_ext::cuda
