// Validation of selective_state_update arguments and the filling of StateUpdateParams. Shared by the CPU,
// CUDA and Meta kernels, so every backend accepts exactly the same inputs and reports the same errors.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "state_update/params.h"

namespace mamba_ext {

using OptTensor = std::optional<at::Tensor>;

// Validated inputs; B and C are (batch, groups, N) views (a 2-D B is viewed with groups = 1).
struct StateUpdateInputs {
  at::Tensor state, x, dt, A, B, C;
  OptTensor D, z, dt_bias, state_batch_indices;
  c10::SymInt batch, dim, dstate, n_groups;
  at::ScalarType state_dtype = at::kFloat;  // fp64 for fp64 x, else fp32
};

StateUpdateInputs check_state_update_inputs(const char* op, const at::Tensor& state, const at::Tensor& x,
                                            const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                                            const at::Tensor& C, const OptTensor& D, const OptTensor& z,
                                            const OptTensor& dt_bias, const OptTensor& state_batch_indices);

// Sizes, strides and pointers of real tensors, out (batch, dim) included.
StateUpdateParams make_state_update_params(const StateUpdateInputs& in, bool dt_softplus, const at::Tensor& out);

}  // namespace mamba_ext
