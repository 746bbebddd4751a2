// CUDA selective_state_update: one recurrent step of the scan (math in params.h).
//
// Thread layout: kLanes = 2 adjacent threads serve one (batch, channel) row. A pass covers 16 states of the
// row as 4 groups of 4: lane l takes groups l and l + 2, so each of the lane's two 16-byte state accesses
// covers, with its partner lane, 32 contiguous bytes of the row, and a warp instruction moves whole 32-byte
// sectors of 16 rows. N > 16 takes more passes (N = 16, the common case, is one pass).
// Why this shape (ncu, H100, batch 64, dim 4096, N 16): with 4 lanes and 2 rows per thread the kernel issued
// about 180 instructions per row and thread (64-bit address math per row and per scalar B/C load) and needed
// 89 registers (31% occupancy), and it read z and D only after the row sum, a second dependent round trip to
// memory. Now the per-row work is shared by 8 states instead of 4, B and C move as one 8- or 16-byte load
// per group, and every input of the row is requested before the arithmetic starts: 14.6 us, 55 registers
// (docs/performance.md, v5).
// Grid: (ceil(dim / kStateUpdateRowsPerBlock), batch), so no integer division per row. Instantiations: 3 dtypes x
// (vector path, generic path).
#pragma once

#include <cassert>
#include <cstdint>
#include <type_traits>

#include "common/cuda_dtype.cuh"
#include "state_update/params.h"

namespace mamba_ext::cuda {

constexpr int kStateUpdateThreads = 128;
constexpr int kStateUpdateLanes = 2;
constexpr int kStateUpdateRowsPerBlock = kStateUpdateThreads / kStateUpdateLanes;
constexpr int kSsuGroups = 2;                                       // groups of 4 states per lane and pass
constexpr int kSsuStatesPerPass = 4 * kSsuGroups * kStateUpdateLanes;  // 16

// Four consecutive elements starting at src (aligned to 4 elements) as one 8- or 16-byte load.
template <typename T>
__device__ __forceinline__ void load_quad(const T* src, float (&v)[4]) {
  using Word = std::conditional_t<sizeof(T) == 4, uint4, uint2>;
  union {
    Word word;
    T elts[4];
  } u;
  u.word = *reinterpret_cast<const Word*>(src);
#pragma unroll
  for (int i = 0; i < 4; ++i) v[i] = to_float(u.elts[i]);
}

// Elements n0 .. n0 + 3 of a row with element stride `stride`: with kVec one load (the stride is 1, the row
// 4-element aligned and the group whole), else one element at a time, zero past N.
template <bool kVec, typename T>
__device__ __forceinline__ void load_group(const T* row, int64_t n0, int64_t stride, int64_t N, float (&v)[4]) {
  if (kVec) {
    load_quad(row + n0, v);
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) v[i] = n0 + i < N ? to_float(row[(n0 + i) * stride]) : 0.f;
  }
}

template <bool kVec>
__device__ __forceinline__ void store_group(float* row, int64_t n0, int64_t N, const float (&v)[4]) {
  if (kVec) {
    *reinterpret_cast<float4*>(row + n0) = make_float4(v[0], v[1], v[2], v[3]);
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if (n0 + i < N) row[n0 + i] = v[i];
    }
  }
}

__device__ __forceinline__ float softplus_if(float v, bool softplus) {
  return softplus && v <= 20.f ? log1pf(__expf(v)) : v;
}

// One row's pointers and scalars, as both lanes hold them.
template <typename input_t>
struct SsuRow {
  float* h;
  const float* A;
  const input_t *B, *C;
  float x, dt, dt_bias;
};

// All passes over one row's states; returns the lane's part of sum_n C[n] h[n]. kVec: whole groups moved
// as single loads and stores (N % 16 == 0 and every row aligned: the common case, checked on the host).
template <bool kVec, typename input_t>
__device__ __forceinline__ float ssu_row_states(const StateUpdateParams& p, SsuRow<input_t>& r, int lane) {
  const int64_t N = p.dstate;
  float y = 0.f;
  for (int64_t pass = 0; pass < N; pass += kSsuStatesPerPass) {
    float h[kSsuGroups][4], a[kSsuGroups][4], Bv[kSsuGroups][4], Cv[kSsuGroups][4];
#pragma unroll
    for (int q = 0; q < kSsuGroups; ++q) {
      const int64_t n0 = pass + 4 * (lane + kStateUpdateLanes * q);
      load_group<kVec>(r.h, n0, 1, N, h[q]);
      load_group<kVec>(r.A, n0, 1, N, a[q]);
      load_group<kVec>(r.B, n0, p.B_dstate_stride, N, Bv[q]);
      load_group<kVec>(r.C, n0, p.C_dstate_stride, N, Cv[q]);
    }
    // dt is finished here, after the first pass's loads are issued: a warp stalls at the first instruction
    // that needs a value still in flight, so arithmetic on dt before the loads would cost a round trip.
    if (pass == 0) r.dt = softplus_if(r.dt + r.dt_bias, p.dt_softplus);
    const float dtx = r.dt * r.x;
#pragma unroll
    for (int q = 0; q < kSsuGroups; ++q) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {  // past N: h, B, C are zero, so y gains nothing
        h[q][i] = __expf(r.dt * a[q][i]) * h[q][i] + dtx * Bv[q][i];
        y += Cv[q][i] * h[q][i];
      }
      store_group<kVec>(r.h, pass + 4 * (lane + kStateUpdateLanes * q), N, h[q]);
    }
  }
  return y;
}

// kVec: N % 16 == 0, the state rows and A 16-byte aligned, B and C with unit N stride and 4-element aligned
// rows. A template parameter rather than a branch: the generic path needs 102 registers, the vector path 55.
template <typename input_t, bool kVec>
__global__ void __launch_bounds__(kStateUpdateThreads) selective_state_update_kernel(const StateUpdateParams p) {
  constexpr int kLanes = kStateUpdateLanes;
  const int lane = threadIdx.x % kLanes;
  const int64_t b = blockIdx.y;
  const int64_t d = int64_t(blockIdx.x) * kStateUpdateRowsPerBlock + threadIdx.x / kLanes;
  const bool active = d < p.dim;
  // No early exit: both lanes of a row take part in the shuffle below (they share a warp).
  int64_t s = -1;  // state row; negative for padding rows and rows past the last channel
  float x = 0.f, dt = 0.f, z = 0.f, D = 0.f;
  if (active) {
    s = p.state_indices_ptr ? p.state_indices_ptr[b] : b;
    if (s >= p.n_states) {
      // Same condition the CPU checks on the host; checking here avoids a device-to-host sync per step.
      __assert_fail("mamba_ext.selective_state_update: state_batch_indices out of range", __FILE__, __LINE__,
                    __func__);
    }
  }
  float y = 0.f;
  if (s >= 0) {
    // Every scalar of the row first (z and D too), so their loads overlap the state loads.
    x = to_float(static_cast<const input_t*>(p.x_ptr)[b * p.x_batch_stride + d * p.x_dim_stride]);
    dt = to_float(static_cast<const input_t*>(p.dt_ptr)[b * p.dt_batch_stride + d * p.dt_dim_stride]);
    if (p.z_ptr) z = to_float(static_cast<const input_t*>(p.z_ptr)[b * p.z_batch_stride + d * p.z_dim_stride]);
    if (p.D_ptr) D = static_cast<const float*>(p.D_ptr)[d];
    const float dt_bias = p.dt_bias_ptr ? static_cast<const float*>(p.dt_bias_ptr)[d] : 0.f;
    // 32-bit division: the host checks dim < 2^31.
    const int64_t g = p.n_groups == 1 ? 0 : uint32_t(d) / uint32_t(p.dim / p.n_groups);
    SsuRow<input_t> r;
    r.h = static_cast<float*>(p.state_ptr) + s * p.state_batch_stride + d * p.state_dim_stride;
    r.A = static_cast<const float*>(p.A_ptr) + d * p.dstate;
    r.B = static_cast<const input_t*>(p.B_ptr) + b * p.B_batch_stride + g * p.B_group_stride;
    r.C = static_cast<const input_t*>(p.C_ptr) + b * p.C_batch_stride + g * p.C_group_stride;
    r.x = x, r.dt = dt, r.dt_bias = dt_bias;
    y = ssu_row_states<kVec>(p, r, lane);
  }
  y += __shfl_xor_sync(0xffffffffu, y, 1);
  if (lane != 0 || !active) return;
  float out = 0.f;  // padding rows output zero
  if (s >= 0) {
    out = y + D * x;
    if (p.z_ptr) out *= z / (1.f + __expf(-z));
  }
  static_cast<input_t*>(p.out_ptr)[b * p.out_batch_stride + d * p.out_dim_stride] = from_float<input_t>(out);
}

}  // namespace mamba_ext::cuda
