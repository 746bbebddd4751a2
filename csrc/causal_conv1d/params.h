// Everything a causal-conv1d kernel (CPU or CUDA) needs, as plain data. No torch headers here, so the
// CUDA kernel headers that include it compile with plain nvcc.
//
// The convolution, per (batch b, channel d), with width W and "extended" input xe = [initial_states, x]
// of length (W-1) + seqlen (initial_states absent: zeros):
//   out[t] = act(bias[d] + sum_k weight[d,k] * xe[t + k])           t in [0, seqlen), k in [0, W)
//   final_states[j] = xe[seqlen + j]                                  j in [0, W-1)
// With seq_idx, xe[e] (position p = e - (W-1) in x's time axis) counts as zero for output t unless
// seq(p) == seq(t), where seq(p) = seq_idx[b, p] for p >= 0 and seq_idx[b, 0] for p < 0 (the initial
// states belong to the first sequence of the row); final_states use t = seqlen - 1.
// With per-sequence states (cu_seqlens, batch 1) each sequence s is convolved on its own, as a row of its own
// with xe = [initial_states[s], x[cu[s] : cu[s + 1]]], and final_states[s] are its last W-1 values. Only the
// CPU kernels take them (per_sequence_states); the CUDA host code composes them from the seq_idx kernels
// (cuda_sequence_states.h).
//
// Layouts (strides in elements; the time stride of x, out, dout, dx is 1):
//   x, out, dout, dx                 (batch, dim, seqlen)   *_batch_stride, *_dim_stride
//   weight (dim, W), bias (dim,)     contiguous, in the accumulation dtype (fp32; fp64 for fp64 inputs), or
//                                    on CUDA in x's dtype (weight_in_input_dtype)
//   initial_states, final_states, dinitial_states, dfinal_states   (state_rows, dim, W-1) contiguous, x's
//     dtype; state_rows is batch, or num_seqs with per-sequence states
//   seq_idx (batch, seqlen) int32 contiguous
//   dweight_partial (n_parts, dim, W+1) fp32 contiguous: per-part sums of dweight (k < W) and dbias (k = W)
#pragma once

#include <cstdint>

namespace mamba_ext {

struct CausalConv1dParams {
  int64_t batch = 0, dim = 0, seqlen = 0, width = 0;
  bool silu = false;

  int64_t x_batch_stride = 0, x_dim_stride = 0;
  int64_t out_batch_stride = 0, out_dim_stride = 0;
  int64_t dout_batch_stride = 0, dout_dim_stride = 0;
  int64_t dx_batch_stride = 0, dx_dim_stride = 0;

  const void* x_ptr = nullptr;
  const void* weight_ptr = nullptr;
  const void* bias_ptr = nullptr;            // nullptr: no bias
  const void* initial_states_ptr = nullptr;  // nullptr: zeros
  const int32_t* seq_idx_ptr = nullptr;      // nullptr: one sequence per row
  int64_t state_rows = 0;
  bool per_sequence_states = false;
  const int64_t* seq_bounds_ptr = nullptr;  // CPU, per-sequence states: cu_seqlens (state_rows + 1 values)

  void* out_ptr = nullptr;
  void* final_states_ptr = nullptr;

  const void* dout_ptr = nullptr;
  const void* dfinal_states_ptr = nullptr;  // nullptr: final_states received no gradient
  void* dx_ptr = nullptr;
  void* dinitial_states_ptr = nullptr;  // nullptr: not wanted (no initial_states)
  float* dweight_partial_ptr = nullptr;  // CUDA: one part per (batch, time chunk)
  // CUDA only: time chunks of kConvChunk steps (one thread block each), and whether every (.., seqlen) row
  // of x, out, dout and dx starts 16-byte aligned, so the kernels may move kConvElts-element packets.
  int64_t n_chunks = 0;
  bool vec_io = false;
  // CUDA only: weight and bias are stored in x's dtype rather than fp32 (a bf16 or fp16 model's own
  // parameters, read without a cast kernel per call).
  bool weight_in_input_dtype = false;
};

// One or a few decode steps: the window of token i is [state[-(W-1):], x[0..i]] and the state keeps the last
// state_len inputs. conv_state rows are picked by conv_state_indices (negative: padding row).
//   x, out (batch, dim, seqlen) with strides; conv_state (n_states, dim, state_len) with strides, x's dtype;
//   weight (dim, W), bias (dim,) contiguous in the accumulation dtype (or x's, see weight_in_input_dtype);
//   conv_state_indices (batch,) int32.
struct CausalConv1dUpdateParams {
  int64_t batch = 0, dim = 0, seqlen = 0, width = 0, state_len = 0;
  bool silu = false;
  int64_t x_batch_stride = 0, x_dim_stride = 0, x_time_stride = 0;
  int64_t out_batch_stride = 0, out_dim_stride = 0, out_time_stride = 0;
  int64_t state_batch_stride = 0, state_dim_stride = 0, state_time_stride = 0;
  const void* x_ptr = nullptr;
  const void* weight_ptr = nullptr;
  const void* bias_ptr = nullptr;
  const int32_t* state_indices_ptr = nullptr;  // nullptr: row b uses conv_state[b]
  void* conv_state_ptr = nullptr;
  void* out_ptr = nullptr;
  bool weight_in_input_dtype = false;  // CUDA only: as in CausalConv1dParams
};

// Widths the CUDA kernels are instantiated for; the CPU kernels take any width in [2, kMaxWidthCpu].
constexpr int64_t kMaxWidthCuda = 4;
constexpr int64_t kMaxWidthCpu = 64;

}  // namespace mamba_ext
