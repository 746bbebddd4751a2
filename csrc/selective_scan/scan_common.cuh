// Pieces shared by the CUDA forward and backward selective-scan kernels (fwd_kernel.cuh, bwd_kernel.cuh):
// each thread's place in the layout (scan_layout.cuh), tile loads, packed sequences, lane sums, dtype
// conversions and fast special functions. No torch headers, so these compile with plain nvcc
// (scripts/nvcc_check.sh).
//
// Tile loads: thread tid loads steps 8 (tid % 4) .. + 7 of row tid / 4 (16-byte accesses, coalesced) into
// registers one tile ahead, so global latency overlaps the scan of the current tile; the same thread
// later writes those steps of the outputs.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common/cuda_dtype.cuh"
#include "selective_scan/params.h"
#include "selective_scan/scan_layout.cuh"

namespace mamba_ext::cuda {

constexpr int kPitch = kTile + 4;   // [c][t] arrays: 16-byte aligned rows, consecutive rows 4 banks apart
constexpr float kLog2e = 1.4426950408889634f;

// The block's place, computed once: batch b, group g, first global channel dbase, real channels nvalid.
// The thread's scan role: channel c, lane p within it, global channel d (clamped to a real one).
struct Pos {
  int64_t b, g, dbase, d;
  int nvalid, c, p, warp, lane;
  int io_c, io_t;  // load/store role: row io_c of the block, steps io_t .. io_t + 7 of each tile
  bool valid;
};

__device__ __forceinline__ Pos block_pos(const SelectiveScanParams& p, const ScanLayout& l) {
  Pos s;
  s.b = blockIdx.y / p.n_groups;
  s.g = blockIdx.y - s.b * p.n_groups;
  const int64_t channels = p.dim / p.n_groups;
  const int64_t first = int64_t(blockIdx.x) * l.R;
  s.dbase = s.g * channels + first;
  s.nvalid = int(channels - first < l.R ? channels - first : l.R);
  s.c = threadIdx.x / l.P;
  s.p = threadIdx.x % l.P;
  s.valid = s.c < s.nvalid;
  s.d = s.dbase + (s.valid ? s.c : s.nvalid - 1);
  s.warp = threadIdx.x / 32;
  s.lane = threadIdx.x % 32;
  s.io_c = threadIdx.x / 4;
  s.io_t = (threadIdx.x % 4) * 8;
  return s;
}

__device__ __forceinline__ int tile_len(int64_t seqlen, int64_t t0) {
  return seqlen - t0 < kTile ? int(seqlen - t0) : kTile;
}

// Packed sequences (seq_idx). A step that starts a new sequence must drop the state carried into it: its
// decay exp(dt A) becomes exactly zero by adding -inf to the exponent, ex2(dt * A2 + cut) with cut = -inf
// there and 0 elsewhere, which costs nothing (an FMA where there was a multiply) and needs no branch.
// With per-sequence states (cu_seqlens, p.per_sequence_states) the kernels' kSeqStates variants instead
// replace the carried state by the sequence's own initial state before its first step (token 0 included)
// and keep the decay, so every cut is 0 there; they also need the steps that end a sequence (the last
// token of the row included), where the forward stores the sequence's last state and the backward adds its
// incoming gradient.
// Warp 0 stages the tile's cut[kTile] in shared memory (one step per lane) and the tile's starts and ends
// as bit masks (bit j: step t0 + j); without seq_idx every cut is 0 and there are none.
struct SequenceMarks {
  unsigned starts, ends;
};

static_assert(kTile == 32, "stage_sequence_cuts maps the tile's steps onto the 32 lanes of a warp");
__device__ __forceinline__ void stage_sequence_cuts(float* cut_s, SequenceMarks* marks_s, const SelectiveScanParams& p,
                                                    const Pos& s, int64_t t0, int len) {
  if (s.warp != 0) return;
  bool start = false, end = false;
  if (p.seq_idx_ptr) {
    const int32_t* seq = p.seq_idx_ptr + s.b * p.seqlen + t0;
    const int64_t t = t0 + s.lane;
    const bool in_tile = s.lane < len;
    start = in_tile && (t > 0 ? seq[s.lane] != seq[s.lane - 1] : p.per_sequence_states);
    end = in_tile && p.per_sequence_states && (t + 1 == p.seqlen || seq[s.lane + 1] != seq[s.lane]);
  }
  cut_s[s.lane] = (start && !p.per_sequence_states) ? -INFINITY : 0.f;
  const unsigned starts = __ballot_sync(0xffffffffu, start), ends = __ballot_sync(0xffffffffu, end);
  if (s.lane == 0) *marks_s = SequenceMarks{starts, ends};
}

// Per-sequence states (kSeqStates): the row of sequence seq_idx[t] in a (num_seqs, dim, N) fp32 array, at
// the lane's first state. Only called for steps that start or end a sequence.
__device__ __forceinline__ int64_t sequence_state_offset(const SelectiveScanParams& p, const Pos& s, int64_t t,
                                                         int K) {
  const int64_t seq = p.seq_idx_ptr[s.b * p.seqlen + t];
  return (seq * p.dim + s.d) * p.dstate + s.p * K;
}

// h = the sequence's initial state (zero without initial_state), for a step that starts it.
template <int K>
__device__ __forceinline__ void load_sequence_state(float (&h)[K], const SelectiveScanParams& p, const Pos& s,
                                                    int64_t t) {
  const int64_t at = sequence_state_offset(p, s, t, K);
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const bool real = p.initial_state_ptr && s.valid && s.p * K + k < p.dstate;
    h[k] = real ? static_cast<const float*>(p.initial_state_ptr)[at + k] : 0.f;
  }
}

// dst[sequence of step t] = v (a forward last state or a backward initial-state gradient).
template <int K>
__device__ __forceinline__ void store_sequence_state(void* dst, const float (&v)[K], const SelectiveScanParams& p,
                                                     const Pos& s, int64_t t) {
  if (!s.valid) return;
  const int64_t at = sequence_state_offset(p, s, t, K);
#pragma unroll
  for (int k = 0; k < K; ++k) {
    if (s.p * K + k < p.dstate) static_cast<float*>(dst)[at + k] = v[k];
  }
}

// g += the gradient flowing into the last state of the sequence that step t ends (none without dlast_state).
template <int K>
__device__ __forceinline__ void add_sequence_state_grad(float (&g)[K], const SelectiveScanParams& p, const Pos& s,
                                                        int64_t t) {
  if (!p.dlast_state_ptr || !s.valid) return;
  const int64_t at = sequence_state_offset(p, s, t, K);
#pragma unroll
  for (int k = 0; k < K; ++k) {
    if (s.p * K + k < p.dstate) g[k] += static_cast<const float*>(p.dlast_state_ptr)[at + k];
  }
}

// Sums four steps' partial values v[0..3] over the P lanes of a channel (P a power of two >= 4): lane p
// returns the total of step p % 4. A transposed butterfly: each round a lane keeps the steps whose lane bit
// matches its own and hands the others to its partner, so 4 values take 3 shuffles instead of 2 x 4 (ncu:
// the unrolled 2 x 4 with a loop over P held ~19% of the forward's stall samples for ~11% of its instructions).
__device__ __forceinline__ float sum_steps_over_lanes(const float (&v)[4], int p, int P) {
  const bool odd = p & 1, upper = p & 2;
  float keep0 = odd ? v[1] : v[0], keep1 = odd ? v[3] : v[2];
  keep0 += __shfl_xor_sync(0xffffffffu, odd ? v[0] : v[1], 1);
  keep1 += __shfl_xor_sync(0xffffffffu, odd ? v[2] : v[3], 1);
  float sum = upper ? keep1 : keep0;
  sum += __shfl_xor_sync(0xffffffffu, upper ? keep0 : keep1, 2);
  for (int off = 4; off < P; off <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  return sum;
}

// v[j] for a run-time j in 0..3, by selects (an indexed register array would go to local memory).
__device__ __forceinline__ float pick_step(const float (&v)[4], int j) {
  return (j & 2) ? ((j & 1) ? v[3] : v[2]) : ((j & 1) ? v[1] : v[0]);
}

// Explicit instantiations of a launch function template <input_t, kSeqStates> with per-sequence states, for
// the three input dtypes: `extern` after the kernel header's definition (declared there), no prefix in the
// *_seq_states.cu file that builds them.
#define MAMBA_EXT_SEQ_STATES_LAUNCHES(prefix, launch)                                                       \
  prefix template cudaError_t launch<float, true>(const SelectiveScanParams&, const ScanLayout&,           \
                                                  const ScanWork&, cudaStream_t);                          \
  prefix template cudaError_t launch<__half, true>(const SelectiveScanParams&, const ScanLayout&,          \
                                                   const ScanWork&, cudaStream_t);                         \
  prefix template cudaError_t launch<__nv_bfloat16, true>(const SelectiveScanParams&, const ScanLayout&,   \
                                                          const ScanWork&, cudaStream_t);

// 2^x on the special-function unit (one MUFU op; relative error ~2^-22). A is pre-scaled by log2(e), so
// exp(dt * A) costs one multiply and this.
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// A time split's total decay exp(A * sum dt) for the split passes, or zero when a sequence starts inside
// it (the local passes then store NaN as sum dt: nothing entering the split flows through it).
__device__ __forceinline__ float split_decay(float A2, float dtsum) {
  return isnan(dtsum) ? 0.f : ex2(A2 * dtsum);
}
__device__ __forceinline__ float split_dtsum_or_cut(float dtsum, bool cut) {
  return cut ? __int_as_float(0x7fc00000) : dtsum;  // a quiet NaN
}

__device__ __forceinline__ float sigmoid(float x) { return __fdividef(1.f, 1.f + ex2(-x * kLog2e)); }

// log2(x) on the special-function unit: absolute error ~2^-22 near 1, relative ~2^-22 elsewhere.
__device__ __forceinline__ float lg2(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// dt = softplus(x) (identity above 20, as the reference) and its derivative sigmoid(x), sharing one exp.
// log1p(e) without a library call (it was ~30 instructions with branches, per element): a degree-7
// series below e = 1/8 (truncation < e^8/8, relative 1e-8), else lg2(1 + e) * ln2, whose result is then
// >= 0.17 so the approximate log's absolute error stays a relative error below 1e-6.
__device__ __forceinline__ void softplus_and_grad(float x, float& dt, float& dsp) {
  const float e = ex2(fminf(x, 20.f) * kLog2e);
  float series = fmaf(e, -1.f / 7.f, 1.f / 6.f);
  series = fmaf(e, -series, 1.f / 5.f);  // 1/5 - e/6 + e^2/7
  series = fmaf(e, -series, 1.f / 4.f);
  series = fmaf(e, -series, 1.f / 3.f);
  series = fmaf(e, -series, 1.f / 2.f);
  series = fmaf(e, -series, 1.f);
  const float lp = e < 0.125f ? e * series : lg2(1.f + e) * 0.6931471805599453f;
  dt = x > 20.f ? x : lp;
  dsp = x > 20.f ? 1.f : __fdividef(e, 1.f + e);
}

// Eight consecutive time steps of one row, the unit of every global load and store: one 16-byte access
// per array for 2-byte dtypes (two for fp32) when the layout allows it (ScanLayout::vec_io).
template <typename T>
struct Pack8 {
  alignas(16) T v[8];
};

// Steps of the 8-step segment starting at t inside a tile of len steps (0..8).
__device__ __forceinline__ int seg_len(int len, int t) { return len - t >= 8 ? 8 : (len - t > 0 ? len - t : 0); }

template <typename T>
__device__ __forceinline__ void load8(Pack8<T>& r, const T* ptr, int n_ok, bool vec) {
  if (vec && n_ok == 8) {
#pragma unroll
    for (int q = 0; q < int(sizeof(Pack8<T>) / 16); ++q) {
      reinterpret_cast<uint4*>(r.v)[q] = reinterpret_cast<const uint4*>(ptr)[q];
    }
  } else {
#pragma unroll
    for (int j = 0; j < 8; ++j) r.v[j] = j < n_ok ? ptr[j] : from_float<T>(0.f);
  }
}

template <typename T>
__device__ __forceinline__ void store8(T* ptr, const float (&v)[8], int n_ok, bool vec) {
  Pack8<T> r;
#pragma unroll
  for (int j = 0; j < 8; ++j) r.v[j] = from_float<T>(v[j]);
  if (vec && n_ok == 8) {
#pragma unroll
    for (int q = 0; q < int(sizeof(Pack8<T>) / 16); ++q) {
      reinterpret_cast<uint4*>(ptr)[q] = reinterpret_cast<const uint4*>(r.v)[q];
    }
  } else {
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      if (j < n_ok) ptr[j] = r.v[j];
    }
  }
}

// Row pointer of the load/store role (row io_c of the block, first step io_t of the tile at t0) into a
// (batch, dim, seqlen) tensor.
template <typename T>
__device__ __forceinline__ T* io_ptr(const void* base, int64_t batch_stride, int64_t dim_stride, const Pos& s,
                                     int64_t t0) {
  return const_cast<T*>(static_cast<const T*>(base)) + s.b * batch_stride + (s.dbase + s.io_c) * dim_stride + t0 + s.io_t;
}

// Input-dependent B or C of the block's (batch, group): rows n = tid / 4 + 32 i, steps io_t..io_t + 7.
template <typename T>
__device__ __forceinline__ const T* bc_ptr(const void* base, int64_t batch_stride, int64_t group_stride,
                                           const Pos& s, int64_t t0) {
  return static_cast<const T*>(base) + s.b * batch_stride + s.g * group_stride + t0 + s.io_t;
}

// Row n < N of the tile (zero past the sequence). Threads whose first row is past N skip the prefetch.
template <typename T>
__device__ __forceinline__ void load_bc8(Pack8<T>& r, const T* ptr, int64_t dstate_stride, int n, int len,
                                         const Pos& s, bool vec) {
  load8(r, ptr + n * dstate_stride, seg_len(len, s.io_t), vec);
}

// Writes the tile's real rows to shared memory as [t][n] (pitch n_pad + 4, so a lane reads its K states as
// float4s): row group 0 from the prefetched r0, further row groups (N > 32) loaded now. The padded columns
// N .. n_pad - 1 stay zero from zero_padded_bc.
template <typename T>
__device__ __forceinline__ void stage_bc8(float* dst, const Pack8<T>& r0, const T* ptr, int64_t dstate_stride,
                                          int64_t N, int len, const Pos& s, const ScanLayout& l, bool vec) {
  const int pitch = l.n_pad + 4;
  for (int n = threadIdx.x / 4; n < N; n += kThreads / 4) {
    Pack8<T> r = r0;
    if (n >= kThreads / 4) load_bc8(r, ptr, dstate_stride, n, len, s, vec);
#pragma unroll
    for (int j = 0; j < 8; ++j) dst[(s.io_t + j) * pitch + n] = to_float(r.v[j]);
  }
}

// Padded states (N <= n < n_pad) must read B = C = 0 in every staged tile. stage_bc8 writes only the real
// rows, so the padded columns of a [kTile][n_pad + 4] tile are zeroed once, before the first tile's barrier.
__device__ __forceinline__ void zero_padded_bc(float* dst, int64_t N, const ScanLayout& l) {
  const int pad = l.n_pad - int(N);
  for (int i = threadIdx.x; i < kTile * pad; i += kThreads) dst[(i / pad) * (l.n_pad + 4) + int(N) + i % pad] = 0.f;
}

// Eight floats to shared memory as two float4s, and back.
__device__ __forceinline__ void sts8(float* dst, const float (&v)[8]) {
  reinterpret_cast<float4*>(dst)[0] = make_float4(v[0], v[1], v[2], v[3]);
  reinterpret_cast<float4*>(dst)[1] = make_float4(v[4], v[5], v[6], v[7]);
}
__device__ __forceinline__ void lds8(float (&v)[8], const float* src) {
  const float4 a = reinterpret_cast<const float4*>(src)[0], b = reinterpret_cast<const float4*>(src)[1];
  v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
  v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}

// Constant B or C of the lane's K states into shared memory [R][n_pad] (zero when input-dependent or
// padded), so the inner loops read either kind through a pointer and a per-step stride (0 for constant).
template <int K>
__device__ __forceinline__ void stage_constant(float* dst, bool is_variable, const void* src, const Pos& s,
                                               const ScanLayout& l, int64_t N) {
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int n = s.p * K + k;
    dst[s.c * l.n_pad + n] = (n < N && !is_variable) ? static_cast<const float*>(src)[s.d * N + n] : 0.f;
  }
}

// K consecutive floats (16-byte aligned, K a multiple of 4) at q, as float4 loads: a lane's K states at one
// step, or four steps of a staged per-channel row.
template <int K>
__device__ __forceinline__ void read_states(float (&v)[K], const float* q) {
#pragma unroll
  for (int j = 0; j < K / 4; ++j) {
    const float4 f = reinterpret_cast<const float4*>(q)[j];
    v[4 * j] = f.x;
    v[4 * j + 1] = f.y;
    v[4 * j + 2] = f.z;
    v[4 * j + 3] = f.w;
  }
}

}  // namespace mamba_ext::cuda
