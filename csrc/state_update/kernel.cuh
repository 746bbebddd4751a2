// CUDA selective_state_update: one recurrent step of the scan (math in params.h).
//
// Thread layout: kLanes = 4 consecutive threads serve one (batch, channel) row; for N <= 16 lane l keeps the
// states [4l, 4l + 4) (one 16-byte word of the fp32 state), so a warp covers 8 whole consecutive rows (512
// contiguous bytes) per access: the state read + write, which dominates the traffic, is fully coalesced.
// Each thread serves kRows rows (8 rows apart), and every load of a row is issued before any arithmetic, so
// several independent HBM requests are in flight per thread. The row sum over n is a 2-step shuffle within
// the 4 lanes. N > 16 takes a plain loop over the lane's groups of 4 states (correct, not tuned).
// Grid: (ceil(dim / (kThreads / kLanes * kRows)), batch), so no integer division per row. Instantiations: 3 dtypes.
#pragma once

#include <cassert>
#include <cstdint>

#include "common/cuda_dtype.cuh"
#include "state_update/params.h"

namespace mamba_ext::cuda {

constexpr int kStateUpdateThreads = 128;
constexpr int kStateUpdateLanes = 4;
constexpr int kStateUpdateRows = 2;
constexpr int kStateUpdateRowsPerBlock = kStateUpdateThreads / kStateUpdateLanes * kStateUpdateRows;

// One (batch, channel) row as a thread sees it.
struct SsuRow {
  int64_t b = 0, d = 0, g = 0, s = -1;  // s: state row, negative for padding rows and rows past the end
  bool active = false;                  // a real row (padding rows included)
  float x = 0.f, dt = 0.f;
};

// Row (b, d); d may be past the last channel (then the row is inactive).
__device__ __forceinline__ SsuRow ssu_row(const StateUpdateParams& p, int64_t b, int64_t d) {
  SsuRow r;
  r.active = d < p.dim;
  if (!r.active) return r;
  r.b = b;
  r.d = d;
  // 32-bit division: the host checks dim < 2^31.
  r.g = p.n_groups == 1 ? 0 : uint32_t(d) / uint32_t(p.dim / p.n_groups);
  r.s = p.state_indices_ptr ? p.state_indices_ptr[b] : b;
  if (r.s >= p.n_states) {
    // Same condition the CPU checks on the host; checking here avoids a device-to-host sync per step.
    __assert_fail("mamba_ext.selective_state_update: state_batch_indices out of range", __FILE__, __LINE__,
                  __func__);
  }
  return r;
}

// x and dt of a live row (kept apart from ssu_row so the caller can issue them with the state loads).
template <typename input_t>
__device__ __forceinline__ void ssu_load_inputs(const StateUpdateParams& p, SsuRow& r) {
  r.x = to_float(static_cast<const input_t*>(p.x_ptr)[r.b * p.x_batch_stride + r.d * p.x_dim_stride]);
  r.dt = to_float(static_cast<const input_t*>(p.dt_ptr)[r.b * p.dt_batch_stride + r.d * p.dt_dim_stride]);
}

__device__ __forceinline__ float ssu_dt(const StateUpdateParams& p, const SsuRow& r) {
  float dt = r.dt + (p.dt_bias_ptr ? static_cast<const float*>(p.dt_bias_ptr)[r.d] : 0.f);
  return p.dt_softplus ? (dt <= 20.f ? log1pf(__expf(dt)) : dt) : dt;
}

// States [n0, n0 + 4) of one row with their A, B and C (zero past N).
struct SsuStates {
  float h[4], a[4], B[4], C[4];
};

__device__ __forceinline__ float* ssu_state_row(const StateUpdateParams& p, const SsuRow& r) {
  return static_cast<float*>(p.state_ptr) + r.s * p.state_batch_stride + r.d * p.state_dim_stride;
}

template <typename input_t>
__device__ __forceinline__ void ssu_load(const StateUpdateParams& p, const SsuRow& r, int64_t n0, bool vec,
                                         SsuStates& st) {
  const int64_t N = p.dstate;
  const float* h_row = ssu_state_row(p, r);
  const float* A_row = static_cast<const float*>(p.A_ptr) + r.d * N;
  const auto* B = static_cast<const input_t*>(p.B_ptr) + r.b * p.B_batch_stride + r.g * p.B_group_stride;
  const auto* C = static_cast<const input_t*>(p.C_ptr) + r.b * p.C_batch_stride + r.g * p.C_group_stride;
  const bool full = vec && n0 + 4 <= N;
  if (full) {
    const float4 hv = *reinterpret_cast<const float4*>(h_row + n0);
    const float4 av = *reinterpret_cast<const float4*>(A_row + n0);
    st.h[0] = hv.x, st.h[1] = hv.y, st.h[2] = hv.z, st.h[3] = hv.w;
    st.a[0] = av.x, st.a[1] = av.y, st.a[2] = av.z, st.a[3] = av.w;
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const bool in = n0 + i < N;
    if (!full) {
      st.h[i] = in ? h_row[n0 + i] : 0.f;
      st.a[i] = in ? A_row[n0 + i] : 0.f;
    }
    st.B[i] = in ? to_float(B[(n0 + i) * p.B_dstate_stride]) : 0.f;
    st.C[i] = in ? to_float(C[(n0 + i) * p.C_dstate_stride]) : 0.f;
  }
}

// One step of the 4 states; returns their contribution sum_n C[n] h[n].
__device__ __forceinline__ float ssu_step(const SsuRow& r, float dt, SsuStates& st) {
  const float dtx = dt * r.x;
  float y = 0.f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    st.h[i] = __expf(dt * st.a[i]) * st.h[i] + dtx * st.B[i];
    y += st.C[i] * st.h[i];
  }
  return y;
}

__device__ __forceinline__ void ssu_store(const StateUpdateParams& p, const SsuRow& r, int64_t n0, bool vec,
                                          const SsuStates& st) {
  float* h_row = ssu_state_row(p, r);
  if (vec && n0 + 4 <= p.dstate) {
    *reinterpret_cast<float4*>(h_row + n0) = make_float4(st.h[0], st.h[1], st.h[2], st.h[3]);
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if (n0 + i < p.dstate) h_row[n0 + i] = st.h[i];
    }
  }
}

// vec: N % 4 == 0 and the state rows and A are 16-byte aligned, so 4 states move as one float4.
template <typename input_t>
__global__ void __launch_bounds__(kStateUpdateThreads) selective_state_update_kernel(const StateUpdateParams p,
                                                                                     bool vec) {
  constexpr int kLanes = kStateUpdateLanes, kRows = kStateUpdateRows, kRowsPerPass = 32 / kLanes;
  const int lane = threadIdx.x % kLanes;
  // Grid (ceil(dim / kStateUpdateRowsPerBlock), batch): warp w of the block covers kRows passes of 8 channels.
  const int64_t first_d = int64_t(blockIdx.x) * kStateUpdateRowsPerBlock +
                          (threadIdx.x / 32) * kRowsPerPass * kRows + (threadIdx.x % 32) / kLanes;
  SsuRow rows[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) rows[r] = ssu_row(p, blockIdx.y, first_d + r * kRowsPerPass);
  // No early exit: all 4 lanes of a row take part in the shuffles below (they share a warp).
  float y[kRows] = {};
  if (p.dstate <= 4 * kLanes) {
    // Every row's loads first, then the arithmetic, then the stores: kRows state words in flight per thread.
    SsuStates st[kRows];
    const int64_t n0 = 4 * lane;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (rows[r].s >= 0) ssu_load_inputs<input_t>(p, rows[r]);
      if (rows[r].s >= 0 && n0 < p.dstate) ssu_load<input_t>(p, rows[r], n0, vec, st[r]);
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (rows[r].s >= 0 && n0 < p.dstate) {
        y[r] = ssu_step(rows[r], ssu_dt(p, rows[r]), st[r]);
        ssu_store(p, rows[r], n0, vec, st[r]);
      }
    }
  } else {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (rows[r].s < 0) continue;
      ssu_load_inputs<input_t>(p, rows[r]);
      const float dt = ssu_dt(p, rows[r]);
      for (int64_t n0 = 4 * lane; n0 < p.dstate; n0 += 4 * kLanes) {
        SsuStates st;
        ssu_load<input_t>(p, rows[r], n0, vec, st);
        y[r] += ssu_step(rows[r], dt, st);
        ssu_store(p, rows[r], n0, vec, st);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    y[r] += __shfl_xor_sync(0xffffffffu, y[r], 1);
    y[r] += __shfl_xor_sync(0xffffffffu, y[r], 2);
  }
  if (lane != 0) return;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const SsuRow& row = rows[r];
    if (!row.active) continue;
    float out = y[r];
    if (row.s >= 0) {
      if (p.D_ptr) out += static_cast<const float*>(p.D_ptr)[row.d] * row.x;
      if (p.z_ptr) {
        const float z = to_float(static_cast<const input_t*>(p.z_ptr)[row.b * p.z_batch_stride + row.d * p.z_dim_stride]);
        out *= z / (1.f + __expf(-z));
      }
    } else {
      out = 0.f;  // padding row
    }
    static_cast<input_t*>(p.out_ptr)[row.b * p.out_batch_stride + row.d * p.out_dim_stride] = from_float<input_t>(out);
  }
}

}  // namespace mamba_ext::cuda
