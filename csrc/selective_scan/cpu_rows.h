// Work decomposition and row loaders shared by the CPU forward and backward.
//
// A task is (batch b, group g, split s): the channels of group g are cut into `splits` contiguous ranges
// and a task walks the sequence chunk by chunk, running all its channels on each chunk (the forward 16 at
// a time in vector lanes, the backward one at a time), so the transposed chunk of an input-dependent B/C
// is loaded once per task and reused by all its channels. `splits` is chosen so there are about four
// tasks per thread.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "selective_scan/cpu_elementwise.h"
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

// dst[t * Np + n] = src[n * dstate_stride + t] for t < len, n < N: a (N, len) slice of B or C in
// time-major order. Lanes n >= N are left as they are (zero: buffers are zero-initialized).
template <typename input_t, typename acc_t>
inline void load_transposed(const input_t* src, int64_t dstate_stride, int64_t len, int64_t N, int64_t Np,
                            acc_t* dst) {
  for (int64_t n = 0; n < N; ++n) {
    const input_t* row = src + n * dstate_stride;
    for (int64_t t = 0; t < len; ++t) dst[t * Np + n] = static_cast<acc_t>(row[t]);
  }
}

// Rows d_begin .. d_begin + K of a (dim, N) parameter, each padded with zeros to Np: dst is K x Np.
// (Also used for (batch, dim, N) states, with d_begin = b * dim + first channel.)
template <typename acc_t>
inline void load_padded_rows(const void* src, int64_t d_begin, int64_t K, int64_t N, int64_t Np, acc_t* dst) {
  const auto* rows = static_cast<const acc_t*>(src) + d_begin * N;
  for (int64_t k = 0; k < K; ++k) {
    std::copy(rows + k * N, rows + (k + 1) * N, dst + k * Np);
    std::fill(dst + k * Np + N, dst + (k + 1) * Np, acc_t(0));
  }
}

// Steps t0.. of row (b, d) of a (batch, dim, seqlen) tensor (steps are contiguous).
template <typename input_t>
inline const input_t* row_at(const void* base, int64_t batch_stride, int64_t dim_stride, int64_t b, int64_t d,
                             int64_t t0) {
  return static_cast<const input_t*>(base) + b * batch_stride + d * dim_stride + t0;
}

// Converts one row chunk of a (batch, dim, seqlen) input to the accumulation type: dst[t] = src[t].
template <typename input_t, typename acc_t>
inline void load_row(const void* base, int64_t batch_stride, int64_t dim_stride, int64_t b, int64_t d, int64_t t0,
                     int64_t len, acc_t* dst) {
  const input_t* src = row_at<input_t>(base, batch_stride, dim_stride, b, d, t0);
  for (int64_t t = 0; t < len; ++t) dst[t] = static_cast<acc_t>(src[t]);
}

// Row chunk (b, d, t0 .. t0 + len) of an input in the accumulation type, for loops over whole vectors: where it
// lies when the types match and len is whole vectors, else converted (and padded) into scratch.
template <typename input_t, typename acc_t>
inline const acc_t* row_view(const void* base, int64_t batch_stride, int64_t dim_stride, int64_t b, int64_t d,
                             int64_t t0, int64_t len, acc_t* scratch) {
  if constexpr (std::is_same_v<input_t, acc_t>) {
    if (len % Simd<acc_t>::kWidth == 0) return row_at<input_t>(base, batch_stride, dim_stride, b, d, t0);
  }
  load_row<input_t>(base, batch_stride, dim_stride, b, d, t0, len, scratch);
  return scratch;
}

// Appends the cache lines of steps [t0, t0 + len) of row (b, d) of a (batch, dim, seqlen) tensor to lines:
// addresses to prefetch a few at a time during later work (forward_lanes_loop spreads them over its steps).
template <typename input_t>
inline void append_row_lines(std::vector<const char*>& lines, const void* base, int64_t batch_stride,
                             int64_t dim_stride, int64_t b, int64_t d, int64_t t0, int64_t len) {
  if (len <= 0) return;
  const auto* first = static_cast<const input_t*>(base) + b * batch_stride + d * dim_stride + t0;
  const auto last = reinterpret_cast<uintptr_t>(first + len - 1);
  for (uintptr_t line = reinterpret_cast<uintptr_t>(first) & ~uintptr_t(63); line <= last; line += 64) {
    lines.push_back(reinterpret_cast<const char*>(line));
  }
}

// Discretization of one row chunk for the backward, which keeps x for softplus': u, x = delta + delta_bias
// (the argument of the optional softplus), dt = softplus?(x) and dtu = dt * u, converted into its buffers
// (len rounded up to whole vectors). The forward reads the rows through row_view instead.
template <typename input_t, typename acc_t>
inline void discretize_row(const SelectiveScanParams& p, int64_t b, int64_t d, int64_t t0, int64_t len, acc_t* u,
                           acc_t* x, acc_t* dt, acc_t* dtu) {
  load_row<input_t>(p.u_ptr, p.u_batch_stride, p.u_dim_stride, b, d, t0, len, u);
  load_row<input_t>(p.delta_ptr, p.delta_batch_stride, p.delta_dim_stride, b, d, t0, len, x);
  const acc_t bias = p.delta_bias_ptr ? static_cast<const acc_t*>(p.delta_bias_ptr)[d] : acc_t(0);
  for (int64_t t = 0; t < len; ++t) x[t] += bias;
  discretize<acc_t>(round_up(len, Simd<acc_t>::kWidth), p.delta_softplus, u, x, acc_t(0), dt, dtu);
}

// A of a task's channels, and B and C where they are constant, padded: each K x Np.
template <typename acc_t>
inline void load_task_parameters(const SelectiveScanParams& p, const TaskRange& r, int64_t Np, acc_t* A,
                                 acc_t* B_rows, acc_t* C_rows) {
  const int64_t K = r.d_end - r.d_begin;
  load_padded_rows(p.A_ptr, r.d_begin, K, p.dstate, Np, A);
  if (!p.is_variable_B) load_padded_rows(p.B_ptr, r.d_begin, K, p.dstate, Np, B_rows);
  if (!p.is_variable_C) load_padded_rows(p.C_ptr, r.d_begin, K, p.dstate, Np, C_rows);
}

// Packed sequences: splits the chunk [t0, t0 + len) of batch row b where seq_idx changes. Piece i covers
// [start[i], start[i + 1]) (start.back() == len); restart[i] says it begins a new sequence, so the state
// before it is zero (with per-sequence states: that sequence's initial state) and no gradient flows back
// across it. Without seq_idx the chunk is one piece.
struct Pieces {
  std::vector<int64_t> start;
  std::vector<char> restart;
  int64_t count() const { return static_cast<int64_t>(restart.size()); }
  int64_t length(int64_t i) const { return start[i + 1] - start[i]; }
};

inline void split_at_sequence_starts(const SelectiveScanParams& p, int64_t b, int64_t t0, int64_t len,
                                     Pieces& pieces) {
  pieces.start.assign(1, 0);
  pieces.restart.clear();
  const int32_t* seq = p.seq_idx_ptr ? p.seq_idx_ptr + b * p.seqlen : nullptr;
  pieces.restart.push_back(seq && t0 > 0 && seq[t0] != seq[t0 - 1]);
  for (int64_t t = 1; seq && t < len; ++t) {
    if (seq[t0 + t] != seq[t0 + t - 1]) {
      pieces.start.push_back(t);
      pieces.restart.push_back(1);
    }
  }
  pieces.start.push_back(len);
}

// Row of initial_state / last_state (and of their gradients) holding the state of batch row b at token t:
// with per-sequence states (cu_seqlens) the sequence of token t, else b.
inline int64_t state_row(const SelectiveScanParams& p, int64_t b, int64_t t) {
  return p.per_sequence_states ? p.seq_idx_ptr[b * p.seqlen + t] : b;
}

// B (or C) of channel k of a task for one chunk and its time stride: the transposed chunk (stride Np) for
// input-dependent, the task's padded constant row k (stride 0) for constant.
template <typename acc_t>
inline acc_t* row_operand(bool is_variable, acc_t* chunk, acc_t* constant_rows, int64_t k, int64_t Np,
                          int64_t* t_stride) {
  *t_stride = is_variable ? Np : 0;
  return is_variable ? chunk : constant_rows + k * Np;
}

}  // namespace mamba_ext::cpu
