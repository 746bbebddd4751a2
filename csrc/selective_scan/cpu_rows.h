// Work decomposition and row loaders shared by the CPU forward and backward.
//
// A task is (batch b, group g, split s): the channels of group g are cut into `splits` contiguous ranges
// and a task runs its channels one after another, chunk by chunk, so the transposed chunk of an
// input-dependent B/C is loaded once per task and reused by all its channels. `splits` is chosen so there
// are about four tasks per thread.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "selective_scan/params.h"

namespace mamba_ext::cpu {

// Length of the CPU backward's recompute window (and of the forward's saved-state chunks).
constexpr int64_t kCpuChunkSize = 128;

struct TaskRange {
  int64_t b, g, s, d_begin, d_end;
};

inline int64_t task_splits(const SelectiveScanParams& p) {
  const int64_t channels = std::max<int64_t>(p.dim / p.n_groups, 1);
  const int64_t rows = std::max<int64_t>(p.batch * p.n_groups, 1);
  return std::clamp<int64_t>(ceil_div(4 * at::get_num_threads(), rows), 1, channels);
}

inline TaskRange task_range(const SelectiveScanParams& p, int64_t task, int64_t splits) {
  const int64_t s = task % splits, bg = task / splits;
  const int64_t b = bg / p.n_groups, g = bg % p.n_groups;
  const int64_t channels = p.dim / p.n_groups;
  return {b, g, s, g * channels + s * channels / splits, g * channels + (s + 1) * channels / splits};
}

template <typename acc_t>
inline acc_t softplus(acc_t x) {
  return x <= acc_t(20) ? std::log1p(std::exp(x)) : x;
}

template <typename acc_t>
inline acc_t sigmoid(acc_t x) {
  return acc_t(1) / (acc_t(1) + std::exp(-x));
}

// dst[t * N + n] = src[n * dstate_stride + t] for t < len: a (N, len) slice of B or C in time-major order.
template <typename input_t, typename acc_t>
inline void load_transposed(const input_t* src, int64_t dstate_stride, int64_t len, int64_t N, acc_t* dst) {
  for (int64_t n = 0; n < N; ++n) {
    const input_t* row = src + n * dstate_stride;
    for (int64_t t = 0; t < len; ++t) dst[t * N + n] = static_cast<acc_t>(row[t]);
  }
}

// One row chunk of the discretization: u[t], dt[t] = softplus?(delta[t] + bias), dtu[t] = dt[t] * u[t].
template <typename input_t, typename acc_t>
inline void load_dt(const SelectiveScanParams& p, int64_t b, int64_t d, int64_t t0, int64_t len, acc_t* u,
                    acc_t* dt, acc_t* dtu) {
  const auto* u_row = static_cast<const input_t*>(p.u_ptr) + b * p.u_batch_stride + d * p.u_dim_stride + t0;
  const auto* delta_row =
      static_cast<const input_t*>(p.delta_ptr) + b * p.delta_batch_stride + d * p.delta_dim_stride + t0;
  const acc_t bias = p.delta_bias_ptr ? static_cast<const acc_t*>(p.delta_bias_ptr)[d] : acc_t(0);
  for (int64_t t = 0; t < len; ++t) {
    const acc_t x = static_cast<acc_t>(delta_row[t]) + bias;
    u[t] = static_cast<acc_t>(u_row[t]);
    dt[t] = p.delta_softplus ? softplus(x) : x;
    dtu[t] = dt[t] * u[t];
  }
}

// Pointer to B (or C) for one row chunk and its time stride: the transposed chunk for input-dependent,
// the (dim, N) row for constant.
template <typename acc_t>
inline const acc_t* row_operand(bool is_variable, const acc_t* chunk, const void* constant, int64_t d,
                                int64_t N, int64_t* t_stride) {
  *t_stride = is_variable ? N : 0;
  return is_variable ? chunk : static_cast<const acc_t*>(constant) + d * N;
}

}  // namespace mamba_ext::cpu
