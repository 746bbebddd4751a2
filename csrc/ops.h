// C++ API of mamba_ext. Every function calls its op through the torch dispatcher, so C++ callers get the
// same CPU/CUDA kernels and autograd as Python callers. Shapes use the (batch, dim, seqlen) notation.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace mamba_ext {

using OptTensor = std::optional<at::Tensor>;

// Selective scan (S6). u, delta, z: (batch, dim, seqlen); A: (dim, N) fp32; B, C: (dim, N) fp32 or
// (batch, N, seqlen) / (batch, groups, N, seqlen) in u's dtype; D, delta_bias: (dim,) fp32;
// initial_state: (batch, dim, N) fp32. Returns (out (batch, dim, seqlen), last_state (batch, dim, N)),
// both differentiable. fp64 inputs use fp64 parameters and states instead of fp32.
std::tuple<at::Tensor, at::Tensor> selective_scan(const at::Tensor& u, const at::Tensor& delta,
                                                  const at::Tensor& A, const at::Tensor& B,
                                                  const at::Tensor& C, const OptTensor& D = {},
                                                  const OptTensor& z = {}, const OptTensor& delta_bias = {},
                                                  bool delta_softplus = false,
                                                  const OptTensor& initial_state = {});

// Internal forward: also returns chunk_states (batch, dim, ceil(seqlen / chunk_size), N), the state
// entering each chunk, which the backward recomputes from.
std::tuple<at::Tensor, at::Tensor, at::Tensor> selective_scan_fwd(
    const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
    const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias, bool delta_softplus,
    const OptTensor& initial_state, int64_t chunk_size);

// Internal backward. Returns (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state); dz is empty
// when z is absent. dlast_state is the incoming gradient of last_state (absent: zero).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
selective_scan_bwd(const at::Tensor& dout, const OptTensor& dlast_state, const at::Tensor& u,
                   const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                   const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias, bool delta_softplus,
                   const OptTensor& initial_state, const at::Tensor& chunk_states, int64_t chunk_size,
                   bool deterministic);

// Chunk length of the saved states for tensors on this device type (the backward's recompute window).
int64_t selective_scan_chunk_size(c10::DeviceType device);

}  // namespace mamba_ext
