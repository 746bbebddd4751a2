// Everything a selective-scan kernel (CPU or CUDA, forward or backward) needs, as plain data. No torch
// headers here, so the CUDA kernels that include it compile with plain nvcc.
//
// Layouts (strides in elements; the time stride of every (.., seqlen) tensor is 1):
//   u, delta, z, out, dout, du, ddelta, dz   (batch, dim, seqlen)      strides *_batch_stride, *_dim_stride
//   B, C input-dependent                     (batch, groups, N, seqlen) strides *_batch/group/dstate_stride
//   B, C constant                            (dim, N) contiguous
//   A, dA (dim, N); D, delta_bias (dim,); initial_state, last_state (state_rows, dim, N): contiguous
//   chunk_states (batch, dim, n_chunks, N) contiguous: the state entering each chunk of chunk_size steps
#pragma once

#include <cstdint>

namespace mamba_ext {

struct SelectiveScanParams {
  int64_t batch = 0, dim = 0, seqlen = 0, dstate = 0, n_groups = 1;
  int64_t chunk_size = 0, n_chunks = 0;
  bool is_variable_B = true, is_variable_C = true, delta_softplus = false, deterministic = false;
  // Rows of initial_state / last_state and their gradients: batch, or num_seqs with per-sequence states
  // (cu_seqlens; batch is then 1). With per_sequence_states, seq_idx[t] is the sequence of token t, and
  // each sequence starts from its own initial_state row and ends in its own last_state row.
  int64_t state_rows = 0;
  bool per_sequence_states = false;

  int64_t u_batch_stride = 0, u_dim_stride = 0;
  int64_t delta_batch_stride = 0, delta_dim_stride = 0;
  int64_t z_batch_stride = 0, z_dim_stride = 0;
  int64_t out_batch_stride = 0, out_dim_stride = 0;
  int64_t B_batch_stride = 0, B_group_stride = 0, B_dstate_stride = 0;
  int64_t C_batch_stride = 0, C_group_stride = 0, C_dstate_stride = 0;

  // Inputs. Pointers typed void when their dtype is the input dtype (fp32/fp16/bf16/fp64), float_t (the
  // state dtype: fp64 for fp64 inputs, else fp32) otherwise. Optional inputs are nullptr when absent.
  const void* u_ptr = nullptr;
  const void* delta_ptr = nullptr;
  const void* z_ptr = nullptr;
  const void* B_ptr = nullptr;  // input dtype when input-dependent, state dtype when constant
  const void* C_ptr = nullptr;
  const void* A_ptr = nullptr;
  const void* D_ptr = nullptr;
  const void* delta_bias_ptr = nullptr;
  const void* initial_state_ptr = nullptr;
  const int32_t* seq_idx_ptr = nullptr;  // (batch, seqlen) contiguous; the state restarts where the id changes

  // Forward outputs.
  void* out_ptr = nullptr;
  void* last_state_ptr = nullptr;
  void* chunk_states_ptr = nullptr;  // written by the forward (null: not kept), read by the backward

  // Backward inputs and outputs. du, ddelta, dz are (batch, dim, seqlen) contiguous in the input dtype;
  // dA, dD, ddelta_bias, dinitial_state in the state dtype; dB/dC as documented by each backend.
  int64_t dout_batch_stride = 0, dout_dim_stride = 0;
  const void* dout_ptr = nullptr;
  const void* dlast_state_ptr = nullptr;  // nullptr: last_state received no gradient
  void* du_ptr = nullptr;
  void* ddelta_ptr = nullptr;
  void* dz_ptr = nullptr;
  void* dA_ptr = nullptr;
  void* dB_ptr = nullptr;
  void* dC_ptr = nullptr;
  void* dD_ptr = nullptr;
  void* ddelta_bias_ptr = nullptr;
  void* dinitial_state_ptr = nullptr;
};

// Upper limit on the state size N: the CUDA kernels keep N states per thread in registers/shared memory.
constexpr int64_t kMaxDstate = 256;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace mamba_ext
