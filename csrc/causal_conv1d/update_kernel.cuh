// CUDA decode step(s) of the causal conv (causal_conv1d_update). One thread per (batch, channel) row: it
// computes the row's outputs from its state and new inputs, then shifts the state left in place. Decode
// moves a few values per row, so the kernel is a plain loop; width and state_len are runtime values.
// Weight and bias are read in their own dtype (fp32, or x's). Instantiations: 3 dtypes.
#pragma once

#include <cassert>
#include <cstdint>

#include "causal_conv1d/params.h"
#include "common/cuda_dtype.cuh"

namespace mamba_ext::cuda {

constexpr int kConvUpdateThreads = 128;

template <typename input_t>
__global__ void __launch_bounds__(kConvUpdateThreads) causal_conv1d_update_kernel(const CausalConv1dUpdateParams p,
                                                                                  int64_t n_states) {
  const int64_t row = blockIdx.x * int64_t(kConvUpdateThreads) + threadIdx.x;
  if (row >= p.batch * p.dim) return;
  const int64_t b = row / p.dim, d = row % p.dim, W = p.width, L = p.seqlen, S = p.state_len;
  auto* out = static_cast<input_t*>(p.out_ptr) + b * p.out_batch_stride + d * p.out_dim_stride;
  const int64_t sb = p.state_indices_ptr ? p.state_indices_ptr[b] : b;
  if (sb >= n_states) {
    // Same condition the CPU checks on the host; checking here avoids a device-to-host sync per step.
    __assert_fail("mamba_ext.causal_conv1d_update: conv_state_indices out of range", __FILE__, __LINE__, __func__);
  }
  if (sb < 0) {  // padding row
    for (int64_t i = 0; i < L; ++i) out[i * p.out_time_stride] = from_float<input_t>(0.f);
    return;
  }
  const auto* x = static_cast<const input_t*>(p.x_ptr) + b * p.x_batch_stride + d * p.x_dim_stride;
  auto* state = static_cast<input_t*>(p.conv_state_ptr) + sb * p.state_batch_stride + d * p.state_dim_stride;
  // Tap k and the bias of channel d, in the dtype they are stored in (fp32, or input_t).
  const auto param = [&](const void* ptr, int64_t i) {
    return p.weight_in_input_dtype ? to_float(static_cast<const input_t*>(ptr)[i])
                                   : static_cast<const float*>(ptr)[i];
  };
  const float bias = p.bias_ptr ? param(p.bias_ptr, d) : 0.f;
  // Element q of the sequence [conv_state, x] (length S + L).
  const auto at = [&](int64_t q) {
    return q < S ? state[q * p.state_time_stride] : x[(q - S) * p.x_time_stride];
  };
  for (int64_t i = 0; i < L; ++i) {
    float y = bias;
    for (int64_t k = 0; k < W; ++k) y += param(p.weight_ptr, d * W + k) * to_float(at(S - (W - 1) + i + k));
    if (p.silu) y = y / (1.f + __expf(-y));
    out[i * p.out_time_stride] = from_float<input_t>(y);
  }
  // Shift left by L in place: ascending j reads element j + L before anything at or past it is written.
  for (int64_t j = 0; j < S; ++j) state[j * p.state_time_stride] = at(L + j);
}

}  // namespace mamba_ext::cuda
