// CUDA kernels of the causal depthwise conv1d (the exact definition is in params.h).
//
// Grid: one block of kConvThreads threads per (channel, time chunk of kConvChunk steps, batch). Each thread owns kConvElts consecutive steps,
// moved as 16-byte packets when the rows are aligned (vec_io), and keeps a register window of inputs around
// them: the width-1 inputs before come from the previous lane by warp shuffle (lane 0 reads them from
// global memory or the initial states), and in the backward the width-1 after come from the next lane. So x
// is read from HBM about once and shared memory is used only for the block reduction.
// Forward: out for the thread's steps; the last chunk's block also writes final_states.
// Backward: g = dout * act'(pre-activation), recomputed from x, at the thread's steps and the width-1 after;
// then dx (and dinitial_states, in the first thread of the row) and partial sums of dweight and dbias,
// reduced in the block in a fixed order into dweight_partial; weight_grad_kernel.cuh sums the parts in a fixed
// order, so the backward is deterministic without atomics.
// Instantiations: 3 dtypes (fp32, fp16, bf16) x 3 widths (2, 3, 4) for the forward; the backward also
// has a version without seq_idx (kMasked = false), whose taps need no sequence tests: 18.
#pragma once

#include <cstdint>

#include "causal_conv1d/params.h"
#include "common/cuda_dtype.cuh"

namespace mamba_ext::cuda {

constexpr int kConvThreads = 128;
constexpr int kConvElts = 16;
constexpr int kConvChunk = kConvThreads * kConvElts;
constexpr unsigned kFullMask = 0xffffffffu;

struct ConvBlock {
  int64_t b, d, c, row, t0;  // batch, channel, chunk, row = b * dim + d, first time step of the chunk
};

// Grid (dim, n_chunks, batch): the block's coordinates come without integer division (64-bit divisions
// per thread cost about as much as the convolution itself).
__device__ __forceinline__ ConvBlock conv_block(const CausalConv1dParams& p) {
  ConvBlock k;
  k.d = blockIdx.x;
  k.c = blockIdx.y;
  k.b = blockIdx.z;
  k.row = k.b * p.dim + k.d;
  k.t0 = k.c * kConvChunk;
  return k;
}

// Channel d's taps and bias as fp32, read in the dtype they are stored in (fp32 or input_t).
template <typename T, int kWidth>
__device__ __forceinline__ void load_weights_as(const CausalConv1dParams& p, int64_t d, float (&w)[kWidth],
                                                float& bias) {
  const T* weight = static_cast<const T*>(p.weight_ptr) + d * kWidth;
#pragma unroll
  for (int k = 0; k < kWidth; ++k) w[k] = to_float(weight[k]);
  bias = p.bias_ptr ? to_float(static_cast<const T*>(p.bias_ptr)[d]) : 0.f;
}
template <typename input_t, int kWidth>
__device__ __forceinline__ void load_weights(const CausalConv1dParams& p, int64_t d, float (&w)[kWidth], float& bias) {
  if (p.weight_in_input_dtype) {
    load_weights_as<input_t, kWidth>(p, d, w, bias);
  } else {
    load_weights_as<float, kWidth>(p, d, w, bias);
  }
}

// The input at time position pos of the block's row; negative positions read the initial states, positions
// past the end are zero. (Lane 0 of a warp whose steps all lie past the end asks for its halo there: reading
// x there was out of bounds, and its garbage times a zero gradient made NaN weight gradients.)
template <typename input_t, int kWidth>
__device__ __forceinline__ float input_at(const CausalConv1dParams& p, const input_t* x_row, int64_t row, int64_t pos) {
  if (pos >= 0) return pos < p.seqlen ? to_float(x_row[pos]) : 0.f;
  const auto* init = static_cast<const input_t*>(p.initial_states_ptr);
  return init ? to_float(init[row * (kWidth - 1) + (kWidth - 1) + pos]) : 0.f;
}

// Sequence id of time position pos (the initial states belong to the row's first sequence; -1 past the end).
__device__ __forceinline__ int32_t seq_at(const int32_t* seq_row, int64_t pos, int64_t seqlen) {
  return pos >= seqlen ? -1 : seq_row[pos < 0 ? 0 : pos];
}

// The thread's register window: win[i] and sid[i] hold the input and sequence id at time t_own - kHalo + i,
// for i < kHalo + kConvElts + kAfter. Past seqlen: input 0, id -1. sid is filled only when seq_row is set.
template <typename input_t, int kWidth, int kAfter>
__device__ __forceinline__ void load_window(const CausalConv1dParams& p, const ConvBlock& blk, const input_t* x_row,
                                            const int32_t* seq_row, int64_t t_own,
                                            float (&win)[kWidth - 1 + kConvElts + kAfter],
                                            int32_t (&sid)[kWidth - 1 + kConvElts + kAfter]) {
  constexpr int kHalo = kWidth - 1, E = kConvElts;
  const int lane = threadIdx.x % 32;
  const int64_t L = p.seqlen;
  float own[E];
  load_floats<input_t, E>(x_row, t_own, L, p.vec_io, own);
#pragma unroll
  for (int i = 0; i < E; ++i) win[kHalo + i] = own[i];
#pragma unroll
  for (int i = 0; i < kHalo; ++i) {  // before: the previous lane's last inputs
    const float v = __shfl_up_sync(kFullMask, own[E - kHalo + i], 1);
    win[i] = lane > 0 ? v : input_at<input_t, kWidth>(p, x_row, blk.row, t_own - kHalo + i);
  }
#pragma unroll
  for (int i = 0; i < kAfter; ++i) {  // after: the next lane's first inputs
    const float v = __shfl_down_sync(kFullMask, own[i], 1);
    const int64_t pos = t_own + E + i;
    win[kHalo + E + i] = lane < 31 ? v : (pos < L ? to_float(x_row[pos]) : 0.f);
  }
  if (seq_row) {  // block-uniform branch
    int32_t ids[E];
#pragma unroll
    for (int i = 0; i < E; ++i) ids[i] = t_own + i < L ? seq_row[t_own + i] : -1;
#pragma unroll
    for (int i = 0; i < E; ++i) sid[kHalo + i] = ids[i];
#pragma unroll
    for (int i = 0; i < kHalo; ++i) {
      const int32_t v = __shfl_up_sync(kFullMask, ids[E - kHalo + i], 1);
      sid[i] = lane > 0 ? v : seq_at(seq_row, t_own - kHalo + i, L);
    }
#pragma unroll
    for (int i = 0; i < kAfter; ++i) {
      const int32_t v = __shfl_down_sync(kFullMask, ids[i], 1);
      const int64_t pos = t_own + E + i;
      sid[kHalo + E + i] = lane < 31 ? v : (pos < L ? seq_row[pos] : -1);
    }
  }
}

// Pre-activation at window index kHalo + i: bias + sum_k w[k] * win[i + k] over taps of the same sequence.
template <int kWidth, int kN>
__device__ __forceinline__ float pre_activation(const float (&w)[kWidth], float bias, const float (&win)[kN],
                                                const int32_t (&sid)[kN], bool masked, int i) {
  float acc = bias;
#pragma unroll
  for (int k = 0; k < kWidth; ++k) {
    if (!masked || sid[i + k] == sid[i + kWidth - 1]) acc += w[k] * win[i + k];
  }
  return acc;
}

__device__ __forceinline__ float sigmoidf_(float v) { return 1.f / (1.f + __expf(-v)); }

template <typename input_t, int kWidth>
__global__ void __launch_bounds__(kConvThreads) causal_conv1d_fwd_kernel(const CausalConv1dParams p) {
  constexpr int kHalo = kWidth - 1, E = kConvElts;
  const ConvBlock blk = conv_block(p);
  const int64_t t_own = blk.t0 + threadIdx.x * E;
  const auto* x_row = static_cast<const input_t*>(p.x_ptr) + blk.b * p.x_batch_stride + blk.d * p.x_dim_stride;
  const int32_t* seq_row = p.seq_idx_ptr ? p.seq_idx_ptr + blk.b * p.seqlen : nullptr;
  float win[kHalo + E];
  int32_t sid[kHalo + E];
  load_window<input_t, kWidth, 0>(p, blk, x_row, seq_row, t_own, win, sid);
  float w[kWidth], bias;
  load_weights<input_t, kWidth>(p, blk.d, w, bias);
  float y[E];
#pragma unroll
  for (int i = 0; i < E; ++i) {
    const float v = pre_activation<kWidth>(w, bias, win, sid, seq_row != nullptr, i);
    y[i] = p.silu ? v * sigmoidf_(v) : v;
  }
  auto* out_row = static_cast<input_t*>(p.out_ptr) + blk.b * p.out_batch_stride + blk.d * p.out_dim_stride;
  store_floats<input_t, E>(out_row, t_own, p.seqlen, p.vec_io, y);

  // final_states[j] = the input at time seqlen - kHalo + j, zero where it is of another sequence than the
  // last token.
  if (blk.c == p.n_chunks - 1 && threadIdx.x < kHalo) {
    const int64_t pos = p.seqlen - kHalo + threadIdx.x;
    const bool visible = !seq_row || seq_at(seq_row, pos, p.seqlen) == seq_row[p.seqlen - 1];
    const float v = visible ? input_at<input_t, kWidth>(p, x_row, blk.row, pos) : 0.f;
    static_cast<input_t*>(p.final_states_ptr)[blk.row * kHalo + threadIdx.x] = from_float<input_t>(v);
  }
}

template <typename input_t, int kWidth, bool kMasked>
__global__ void __launch_bounds__(kConvThreads) causal_conv1d_bwd_kernel(const CausalConv1dParams p) {
  constexpr int kHalo = kWidth - 1, E = kConvElts, kWarps = kConvThreads / 32;
  __shared__ float red_s[kWarps][kWidth + 1];
  const ConvBlock blk = conv_block(p);
  const int tid = threadIdx.x, lane = tid % 32;
  const int64_t L = p.seqlen, t_own = blk.t0 + tid * E;
  const auto* x_row = static_cast<const input_t*>(p.x_ptr) + blk.b * p.x_batch_stride + blk.d * p.x_dim_stride;
  const auto* dout_row =
      static_cast<const input_t*>(p.dout_ptr) + blk.b * p.dout_batch_stride + blk.d * p.dout_dim_stride;
  const auto* dfinal = static_cast<const input_t*>(p.dfinal_states_ptr);
  const int32_t* seq_row = kMasked ? p.seq_idx_ptr + blk.b * L : nullptr;
  constexpr bool masked = kMasked;

  // Inputs at t_own - kHalo .. t_own + E + kHalo - 1 and dout at t_own .. t_own + E + kHalo - 1.
  float win[kHalo + E + kHalo];
  int32_t sid[kHalo + E + kHalo];
  load_window<input_t, kWidth, kHalo>(p, blk, x_row, seq_row, t_own, win, sid);
  float go[E + kHalo];
  {
    float own[E];
    load_floats<input_t, E>(dout_row, t_own, L, p.vec_io, own);
#pragma unroll
    for (int i = 0; i < E; ++i) go[i] = own[i];
#pragma unroll
    for (int i = 0; i < kHalo; ++i) {
      const float v = __shfl_down_sync(kFullMask, own[i], 1);
      const int64_t pos = t_own + E + i;
      go[E + i] = lane < 31 ? v : (pos < L ? to_float(dout_row[pos]) : 0.f);
    }
  }
  float w[kWidth], bias;
  load_weights<input_t, kWidth>(p, blk.d, w, bias);

  // How many of the window's steps t_own + i (i < E + kHalo) lie in the row: the per-step range tests below
  // are 32-bit compares against it instead of 64-bit ones against L. Negative for threads past the end.
  const int in_row = static_cast<int>(L - t_own < E + kHalo ? L - t_own : E + kHalo);

  // g at times t_own + i, i < E + kHalo (zero past the end of the row).
  float g[E + kHalo];
#pragma unroll
  for (int i = 0; i < E + kHalo; ++i) {
    float gi = go[i];
    if (p.silu) {
      const float v = pre_activation<kWidth>(w, bias, win, sid, masked, i), s = sigmoidf_(v);
      gi *= s * (1.f + v * (1.f - s));
    }
    g[i] = i < in_row ? gi : 0.f;
  }

  // dx[s] = sum_k w[k] g[s + kHalo - k] over outputs of s's sequence, plus dfinal_states at the last kHalo steps.
  const int32_t last_seq = masked ? seq_row[L - 1] : 0;
  float dx[E];
#pragma unroll
  for (int i = 0; i < E; ++i) {
    float acc = 0.f;
#pragma unroll
    for (int k = 0; k < kWidth; ++k) {
      if (!masked || sid[kHalo + i + kHalo - k] == sid[kHalo + i]) acc += w[k] * g[i + kHalo - k];
    }
    // Step t_own + i is among the row's last kHalo steps (then in_row = L - t_own exactly).
    if (dfinal && i < in_row && i + kHalo >= in_row && (!masked || sid[kHalo + i] == last_seq)) {
      acc += to_float(dfinal[blk.row * kHalo + (i + kHalo - in_row)]);
    }
    dx[i] = acc;
  }
  auto* dx_row = static_cast<input_t*>(p.dx_ptr) + blk.b * p.dx_batch_stride + blk.d * p.dx_dim_stride;
  store_floats<input_t, E>(dx_row, t_own, L, p.vec_io, dx);

  // dinitial_states[e] (time e - kHalo < 0): taps from outputs t = e - k >= 0, all owned by the row's first thread.
  if (t_own == 0) {
    const int32_t first_seq = masked ? seq_row[0] : 0;
#pragma unroll
    for (int e = 0; e < kHalo; ++e) {
      float acc = 0.f;
#pragma unroll
      for (int k = 0; k <= e; ++k) {
        if (!masked || sid[kHalo + e - k] == first_seq) acc += w[k] * g[e - k];
      }
      if (dfinal && e >= L && (!masked || first_seq == last_seq)) acc += to_float(dfinal[blk.row * kHalo + (e - L)]);
      static_cast<input_t*>(p.dinitial_states_ptr)[blk.row * kHalo + e] = from_float<input_t>(acc);
    }
  }

  // Partial dweight[k] = sum_t g[t] * x(t - kHalo + k) and dbias = sum_t g[t] over the thread's steps.
  float part[kWidth + 1];
#pragma unroll
  for (int k = 0; k <= kWidth; ++k) part[k] = 0.f;
#pragma unroll
  for (int i = 0; i < E; ++i) {
#pragma unroll
    for (int k = 0; k < kWidth; ++k) {
      if (!masked || sid[i + k] == sid[i + kHalo]) part[k] += g[i] * win[i + k];
    }
    part[kWidth] += g[i];
  }
#pragma unroll
  for (int k = 0; k <= kWidth; ++k) {
#pragma unroll
    for (int off = 16; off > 0; off /= 2) part[k] += __shfl_xor_sync(kFullMask, part[k], off);
  }
  if (lane == 0) {
#pragma unroll
    for (int k = 0; k <= kWidth; ++k) red_s[tid / 32][k] = part[k];
  }
  __syncthreads();
  if (tid <= kWidth) {
    float sum = 0.f;
#pragma unroll
    for (int wp = 0; wp < kWarps; ++wp) sum += red_s[wp][tid];
    const int64_t part_idx = blk.b * p.n_chunks + blk.c;
    p.dweight_partial_ptr[(part_idx * p.dim + blk.d) * (kWidth + 1) + tid] = sum;
  }
}

}  // namespace mamba_ext::cuda
