// Per-sequence final states of a packed row on CUDA (cu_seqlens, batch 1, no initial states), after the
// forward: the state after the last token `last` of sequence i is recomputed from the forward's saved state
// entering last's tile, or from zero when the sequence starts inside that tile, so at most kTile steps per
// (sequence, channel, state) and no change to the scan kernels. One thread per (sequence, channel, state),
// states fastest, so the threads of a channel read the same dt and u. Used for inference (the states seed
// decoding); gradients through them are CPU-only (cuda_bwd.cu rejects them).
//
// Instantiations: 3 input dtypes.
#pragma once

#include "selective_scan/scan_common.cuh"

namespace mamba_ext::cuda {

template <typename input_t>
__global__ void sequence_final_states_kernel(SelectiveScanParams p, const int64_t* bounds, int64_t n_seqs,
                                             float* final_states) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, N = p.dstate;
  if (idx >= n_seqs * p.dim * N) return;
  const int64_t n = idx % N, d = (idx / N) % p.dim, seq = idx / (N * p.dim);
  const int64_t begin = bounds[seq], end = bounds[seq + 1];
  float h = 0.f;
  if (end > begin) {
    const int64_t last = end - 1, tile = last / kTile;
    int64_t t = begin;
    if (begin < tile * kTile) {  // the saved state entering last's tile is already this sequence's
      h = static_cast<const float*>(p.chunk_states_ptr)[(d * p.n_chunks + tile) * N + n];
      t = tile * kTile;
    }
    const float A2 = static_cast<const float*>(p.A_ptr)[d * N + n] * kLog2e;
    const float bias = p.delta_bias_ptr ? static_cast<const float*>(p.delta_bias_ptr)[d] : 0.f;
    const int64_t g = d / (p.dim / p.n_groups);
    const auto* u = static_cast<const input_t*>(p.u_ptr) + d * p.u_dim_stride;
    const auto* delta = static_cast<const input_t*>(p.delta_ptr) + d * p.delta_dim_stride;
    const auto* B = static_cast<const input_t*>(p.B_ptr) + g * p.B_group_stride + n * p.B_dstate_stride;
    const float B_constant = p.is_variable_B ? 0.f : static_cast<const float*>(p.B_ptr)[d * N + n];
    for (; t <= last; ++t) {
      float dt = to_float(delta[t]) + bias, dsp;
      if (p.delta_softplus) softplus_and_grad(dt, dt, dsp);  // the forward's own approximation
      const float Bv = p.is_variable_B ? to_float(B[t]) : B_constant;
      h = fmaf(ex2(dt * A2), h, dt * to_float(u[t]) * Bv);
    }
  }
  final_states[idx] = h;
}

template <typename input_t>
cudaError_t launch_sequence_final_states(const SelectiveScanParams& p, const int64_t* bounds, int64_t n_seqs,
                                         float* final_states, cudaStream_t stream) {
  const int64_t total = n_seqs * p.dim * p.dstate;
  if (total == 0) return cudaSuccess;
  sequence_final_states_kernel<input_t><<<unsigned((total + 255) / 256), 256, 0, stream>>>(p, bounds, n_seqs,
                                                                                          final_states);
  return cudaGetLastError();
}

}  // namespace mamba_ext::cuda
