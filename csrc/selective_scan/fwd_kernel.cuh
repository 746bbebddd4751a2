// CUDA forward of the selective scan: out = (sum_n C h + D u) * silu(z), the last state, and the state
// entering every kTile-step chunk (chunk_states, what the backward recomputes from). u, delta, z, B, C are
// read once; dt, the scan and the gate stay on chip in fp32; (batch, dim, seqlen, N) is never stored.
//
// Grid: x = channel block within the group (R channels, layout in scan_common.cuh), y = batch * groups + g,
// z = time split. Each block walks its split tile by tile: (1) stage dt, dt*u and B/C of the tile (loaded
// into registers during the previous tile, 16 bytes per access) in shared memory, (2) every lane advances its K states through
// the tile, one exp2 per state and step, and the P lanes of a channel sum C*h with shuffles, four steps at
// a time, (3) gate and store the output, coalesced along time.
// With one split the kernel runs once. With S > 1 splits (few rows, long sequences) a first pass runs each
// split from a zero state (kLocal: no output, only its end state and sum of dt), cut into consecutive parts
// that fill the GPU in whole rounds (set_local_parts), fwd_combine_kernel chains the parts (a part's total
// decay is exp(A * sum dt)), and the full pass starts each split from its true state. The last split passes
// nothing on, so the zero-start pass skips it; in packed rows it also skips what a later sequence start
// drops (packed_parts.cuh). Without a backward to come (chunk_states_ptr null) the full pass stores no chunk
// states.
// Packed rows (seq_idx): the decay of a step that starts a sequence is zero (stage_sequence_cuts), and a
// split containing such a step passes nothing on to the next one. Per-sequence states (cu_seqlens) run the
// kSeqStates variant: a step that starts a sequence first loads its initial state, a step that ends one
// stores its last state (per-step branches the other variant does not carry).
//
// Instantiations: 3 input dtypes (fp32, fp16, bf16) x K in {4, 8} x kLocal x kSeqStates = 24 scan kernels,
// 2 combine; cuda_fwd.cu builds kSeqStates = false, cuda_fwd_seq_states.cu kSeqStates = true.
#pragma once

#include <type_traits>

#include "common/dynamic_smem.cuh"
#include "selective_scan/packed_parts.cuh"
#include "selective_scan/scan_common.cuh"

namespace mamba_ext::cuda {

inline size_t fwd_smem_bytes(const ScanLayout& l) {
  return sizeof(float) * (3 * l.R * kPitch + 2 * kTile * (l.n_pad + 4) + 2 * l.R * l.n_pad);
}

// Blocks per multiprocessor the forward is compiled for: a cap of 128 registers. (Capping at 80 for 6 blocks
// made the bf16 forward 37% slower: spills and less overlap in the scan.)
constexpr int kFwdMinBlocks = 4;

template <typename input_t, int K, bool kLocal, bool kSeqStates>
__global__ void __launch_bounds__(kThreads, kLocal ? local_min_blocks(sizeof(input_t), K, kSeqStates) : kFwdMinBlocks)
fwd_kernel(SelectiveScanParams p, ScanLayout l, ScanWork w) {
  extern __shared__ float4 smem4[];
  const int R = l.R, bc_pitch = l.n_pad + 4;
  float* dt_s = reinterpret_cast<float*>(smem4);  // [R][kPitch]
  float* dtu_s = dt_s + R * kPitch;               // [R][kPitch]
  float* y_s = dtu_s + R * kPitch;                // [R][kPitch]
  float* B_s = y_s + R * kPitch;                  // [kTile][n_pad + 4]
  float* C_s = B_s + kTile * bc_pitch;
  float* Bk_s = C_s + kTile * bc_pitch;           // constant B, C: [R][n_pad]
  float* Ck_s = Bk_s + R * l.n_pad;
  __shared__ __align__(16) float cut_s[kTile];  // -inf where a packed sequence starts, else 0
  __shared__ SequenceMarks marks_s;

  const Pos s = block_pos(p, l);
  // kLocal: z = split * local_parts + part, a part of the split (set_local_parts).
  const int64_t split = kLocal ? blockIdx.z / l.local_parts : blockIdx.z, N = p.dstate;
  const int64_t part = kLocal ? blockIdx.z % l.local_parts : 0;
  const int64_t row = s.b * p.dim + s.d;

  // Scan role: states n = p*K + k of channel c. Constant B/C go to shared memory so the inner loop reads
  // either kind through a pointer and a step (0 for constant), without branches.
  float A2[K], h[K];
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int n = s.p * K + k;
    const bool real = n < N;
    A2[k] = real ? static_cast<const float*>(p.A_ptr)[s.d * N + n] * kLog2e : 0.f;
    h[k] = 0.f;
    if (!kLocal && real && s.valid) {
      if (split > 0) {
        h[k] = w.split_in[(row * l.n_splits + split) * N + n];
      } else if (p.initial_state_ptr && !kSeqStates) {  // kSeqStates: token 0 loads its sequence's
        h[k] = static_cast<const float*>(p.initial_state_ptr)[row * N + n];
      }
    }
  }
  stage_constant<K>(Bk_s, p.is_variable_B, p.B_ptr, s, l, N);
  stage_constant<K>(Ck_s, p.is_variable_C, p.C_ptr, s, l, N);
  zero_padded_bc(B_s, N, l);
  zero_padded_bc(C_s, N, l);
  const float* B_read = p.is_variable_B ? B_s + s.p * K : Bk_s + s.c * l.n_pad + s.p * K;
  const float* C_read = p.is_variable_C ? C_s + s.p * K : Ck_s + s.c * l.n_pad + s.p * K;
  const int B_step = p.is_variable_B ? bc_pitch : 0, C_step = p.is_variable_C ? bc_pitch : 0;

  // Load/store role: steps io_t .. io_t + 7 of row io_c.
  const bool io_row = s.io_c < s.nvalid;
  const float bias_io = (io_row && p.delta_bias_ptr) ? static_cast<const float*>(p.delta_bias_ptr)[s.dbase + s.io_c] : 0.f;
  const float D_io = (io_row && p.D_ptr) ? static_cast<const float*>(p.D_ptr)[s.dbase + s.io_c] : 0.f;

  Pack8<input_t> u_n, delta_n, z_n, B_n, C_n;
  const auto prefetch = [&](int64_t chunk) {
    const int64_t t0 = chunk * kTile;
    const int len = tile_len(p.seqlen, t0);
    const int n_ok = io_row ? seg_len(len, s.io_t) : 0;
    load8(u_n, io_ptr<input_t>(p.u_ptr, p.u_batch_stride, p.u_dim_stride, s, t0), n_ok, l.vec_io);
    load8(delta_n, io_ptr<input_t>(p.delta_ptr, p.delta_batch_stride, p.delta_dim_stride, s, t0), n_ok, l.vec_io);
    if (!kLocal && p.z_ptr) load8(z_n, io_ptr<input_t>(p.z_ptr, p.z_batch_stride, p.z_dim_stride, s, t0), n_ok, l.vec_io);
    if (p.is_variable_B && s.io_c < N) {
      load_bc8(B_n, bc_ptr<input_t>(p.B_ptr, p.B_batch_stride, p.B_group_stride, s, t0), p.B_dstate_stride,
               s.io_c, len, s, l.vec_io);
    }
    if (!kLocal && p.is_variable_C && s.io_c < N) {
      load_bc8(C_n, bc_ptr<input_t>(p.C_ptr, p.C_batch_stride, p.C_group_stride, s, t0), p.C_dstate_stride,
               s.io_c, len, s, l.vec_io);
    }
  };

  float dtsum = 0.f;
  bool cut = false;  // kLocal: a sequence starts inside the split
  ChunkRange range = split_part_chunks(p, l, split, part, kLocal ? l.local_parts : 1);
  if (kLocal) range = forward_part_chunks(p, l, s.b, split, range);  // packed rows: from the last start on
  const int64_t chunk_begin = range.begin, chunk_end = range.end;
  if (chunk_begin < chunk_end) prefetch(chunk_begin);
  for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
    const int64_t t0 = chunk * kTile;
    const int len = tile_len(p.seqlen, t0);
    const int n_ok = io_row ? seg_len(len, s.io_t) : 0;
    if (!kLocal && s.valid && p.chunk_states_ptr) {  // null when no backward follows
      float* dst = static_cast<float*>(p.chunk_states_ptr) + (row * p.n_chunks + chunk) * N;
#pragma unroll
      for (int k = 0; k < K; ++k) {
        if (s.p * K + k < N) dst[s.p * K + k] = h[k];
      }
    }

    // (1) Stage the tile; keep u and z in registers for the gate.
    float u_c[8];
    const Pack8<input_t> z_c = z_n;
    if (s.io_c < R) {
      float dt8[8], dtu8[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) dt8[j] = to_float(delta_n.v[j]) + bias_io;
      if (p.delta_softplus) {  // one branch for the 8 steps (inside the loop it was tested per step)
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          float dsp;
          softplus_and_grad(dt8[j], dt8[j], dsp);
        }
      }
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        u_c[j] = to_float(u_n.v[j]);
        dt8[j] = j < n_ok ? dt8[j] : 0.f;  // padding leaves the state unchanged
        dtu8[j] = dt8[j] * u_c[j];
      }
      sts8(dt_s + s.io_c * kPitch + s.io_t, dt8);
      sts8(dtu_s + s.io_c * kPitch + s.io_t, dtu8);
    }
    if (p.is_variable_B) {
      stage_bc8(B_s, B_n, bc_ptr<input_t>(p.B_ptr, p.B_batch_stride, p.B_group_stride, s, t0), p.B_dstate_stride,
                N, len, s, l, l.vec_io);
    }
    if (!kLocal && p.is_variable_C) {
      stage_bc8(C_s, C_n, bc_ptr<input_t>(p.C_ptr, p.C_batch_stride, p.C_group_stride, s, t0), p.C_dstate_stride,
                N, len, s, l, l.vec_io);
    }
    stage_sequence_cuts(cut_s, &marks_s, p, s, t0, len);
    __syncthreads();
    const SequenceMarks marks = marks_s;
    cut = cut || marks.starts != 0;
    if (chunk + 1 < chunk_end) prefetch(chunk + 1);  // in flight during the scan

    // (2) Scan, four steps at a time. kMarked (kSeqStates only, for a tile where a sequence starts or ends)
    // adds the per-step tests that load initial states and store last states; other tiles run without them.
    const float* dt_row = dt_s + s.c * kPitch;
    const float* dtu_row = dtu_s + s.c * kPitch;
    const float* Bq = B_read;
    const float* Cq = C_read;
    const auto scan_tile = [&](auto marked) {
      constexpr bool kMarked = decltype(marked)::value;
      // Unrolled by 4 groups of 4 steps (was 2): A/B on the H100, bf16 forward -2..-6% on four benchmark
      // shapes, +5% at (16, 1536, 512); the fp32 K = 4 kernel no longer spills (-12%).
#pragma unroll 4
      for (int t = 0; t < kTile; t += 4) {
        float dtv[4], dtuv[4], cutv[4];
        read_states(dtv, dt_row + t);
        read_states(dtuv, dtu_row + t);
        read_states(cutv, cut_s + t);
        float y[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          float Bv[K], Cv[K];
          read_states(Bv, Bq);
          Bq += B_step;
          if (!kLocal) {
            read_states(Cv, Cq);
            Cq += C_step;
          }
          y[j] = 0.f;
          if constexpr (kMarked) {
            if ((marks.starts >> (t + j)) & 1u) load_sequence_state(h, p, s, t0 + t + j);
          }
#pragma unroll
          for (int k = 0; k < K; ++k) {
            h[k] = fmaf(ex2(fmaf(dtv[j], A2[k], cutv[j])), h[k], dtuv[j] * Bv[k]);
            if (!kLocal) y[j] = fmaf(Cv[k], h[k], y[j]);
          }
          if constexpr (kMarked && !kLocal) {
            if ((marks.ends >> (t + j)) & 1u) store_sequence_state(p.last_state_ptr, h, p, s, t0 + t + j);
          }
        }
        if (kLocal) {
          dtsum += (dtv[0] + dtv[1]) + (dtv[2] + dtv[3]);
        } else {
          const float y_sum = sum_steps_over_lanes(y, s.p, l.P);  // step s.p % 4
          if (s.p < 4) y_s[s.c * kPitch + t + s.p] = y_sum;
        }
      }
    };
    const bool marked_tile = kSeqStates && (marks.starts | marks.ends) != 0;
    if (marked_tile) scan_tile(std::true_type()); else scan_tile(std::false_type());
    __syncthreads();

    // (3) Gate and store. The next tile's staging writes other arrays, and its scan writes y_s only after
    // the next barrier, so no barrier is needed here.
    if (!kLocal && n_ok > 0) {
      float v[8];
      lds8(v, y_s + s.io_c * kPitch + s.io_t);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        v[j] = fmaf(D_io, u_c[j], v[j]);
        if (p.z_ptr) {
          const float z = to_float(z_c.v[j]);
          v[j] *= z * sigmoid(z);
        }
      }
      store8(io_ptr<input_t>(p.out_ptr, p.out_batch_stride, p.out_dim_stride, s, t0), v, n_ok, l.vec_io);
    }
  }

  if (!s.valid) return;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int n = s.p * K + k;
    if (n >= N) continue;
    if (kLocal) {
      w.split_local[split_part_slot(l, row, split, part) * N + n] = h[k];
    } else if (split == l.n_splits - 1 && !kSeqStates) {  // kSeqStates: stored where each sequence ends
      static_cast<float*>(p.last_state_ptr)[row * N + n] = h[k];
    }
  }
  if (kLocal && s.p == 0) w.split_dtsum[split_part_slot(l, row, split, part)] = split_dtsum_or_cut(dtsum, cut);
}

// Chains the splits: the state entering split s is the state entering split s-1 carried through that split's
// parts in order, each decaying it by exp(A * sum dt) of the part and adding the part's zero-start end state.
// One thread per (batch, channel, state). The parts of all splits are walked as one flat run, so that with
// the arrays declared free of aliasing, the unrolled loop issues several parts' loads at once (one after the
// other, each waiting on the last, 20 parts took 11 us at (1, 1536, 131072)).
template <bool kSeqStates>
__global__ void fwd_combine_kernel(SelectiveScanParams p, ScanLayout l, ScanWork w) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t N = p.dstate;
  if (i >= p.batch * p.dim * N) return;
  const int64_t row = i / N, n = i % N, d = row % p.dim, parts = l.local_parts;
  const float* __restrict__ dtsums = w.split_dtsum + split_part_slot(l, row, 0, 0);  // (split, part) of this row
  const float* __restrict__ locals = w.split_local + split_part_slot(l, row, 0, 0) * N + n;
  float* __restrict__ split_in = w.split_in + row * l.n_splits * N + n;
  const float A2 = static_cast<const float*>(p.A_ptr)[d * N + n] * kLog2e;
  // Per-sequence states: the first split starts a sequence at token 0, so nothing flows in.
  float h = p.initial_state_ptr && !kSeqStates ? static_cast<const float*>(p.initial_state_ptr)[i] : 0.f;
  split_in[0] = h;
  int64_t part = 0, split = 0;
#pragma unroll 8
  for (int64_t at = 0; at < (l.n_splits - 1) * parts; ++at) {  // the last split passes nothing on
    h = split_decay(A2, dtsums[at]) * h + locals[at * N];
    if (++part == parts) {  // split `split` done: h enters the next one
      part = 0;
      split_in[++split * N] = h;
    }
  }
}

template <typename input_t, int K, bool kSeqStates>
cudaError_t launch_fwd_k(const SelectiveScanParams& p, const ScanLayout& l, const ScanWork& w, cudaStream_t stream) {
  const size_t smem = fwd_smem_bytes(l);
  const dim3 grid(unsigned(l.n_cblocks), unsigned(p.batch * p.n_groups), unsigned(l.n_splits));
  // 2 instantiations here (kLocal), per input dtype, K and kSeqStates.
  for (auto kernel : {fwd_kernel<input_t, K, true, kSeqStates>, fwd_kernel<input_t, K, false, kSeqStates>}) {
    const cudaError_t err = allow_dynamic_smem(kernel, smem);
    if (err != cudaSuccess) return err;
  }
  if (l.n_splits > 1) {
    const dim3 local_grid(grid.x, grid.y, unsigned((l.n_splits - 1) * l.local_parts));
    fwd_kernel<input_t, K, true, kSeqStates><<<local_grid, kThreads, smem, stream>>>(p, l, w);
    const int64_t total = p.batch * p.dim * p.dstate;
    fwd_combine_kernel<kSeqStates><<<unsigned((total + 255) / 256), 256, 0, stream>>>(p, l, w);
  }
  fwd_kernel<input_t, K, false, kSeqStates><<<grid, kThreads, smem, stream>>>(p, l, w);
  return cudaGetLastError();
}

// Entry point for one input dtype and kind of packing: 2 (K) x 2 (kLocal) scan instantiations. kSeqStates
// (p.per_sequence_states) is instantiated in its own file, so the two halves compile in parallel.
template <typename input_t, bool kSeqStates>
cudaError_t launch_selective_scan_fwd(const SelectiveScanParams& p, const ScanLayout& l, const ScanWork& w,
                                      cudaStream_t stream) {
  return l.K == 4 ? launch_fwd_k<input_t, 4, kSeqStates>(p, l, w, stream)
                  : launch_fwd_k<input_t, 8, kSeqStates>(p, l, w, stream);
}

// Declared here, built in cuda_fwd_seq_states.cu.
MAMBA_EXT_SEQ_STATES_LAUNCHES(extern, launch_selective_scan_fwd)

}  // namespace mamba_ext::cuda
