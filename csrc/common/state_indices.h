// The state-pool index rule shared by the decode ops (causal_conv1d_update, selective_state_update): an
// optional (batch,) int32 tensor picks, for each batch row, the row of a larger state pool it reads and
// updates in place; a negative index marks a padding row (its output is zeros, no state is touched).
#pragma once

#include <ATen/core/Tensor.h>

#include "common/checks.h"

namespace mamba_ext {

// Shape, dtype and device of the index tensor; returns it contiguous.
inline at::Tensor check_state_indices(const char* op, const char* name, const at::Tensor& indices,
                                      const c10::SymInt& batch, const at::Tensor& ref, const char* ref_name) {
  check_device(op, name, indices, ref, ref_name);
  check_rank(op, name, indices, 1);
  check_shape(op, name, indices, {batch}, "(batch,)");
  check_dtype(op, name, indices, at::kInt, "int32 row indices into the state pool");
  return indices.contiguous();
}

// Every index must be below the pool size. Reads the values, so only for CPU tensors; the CUDA kernels
// check the same condition on the device (a device-side assert) rather than synchronizing here.
inline void check_state_indices_values(const char* op, const char* name, const at::Tensor& indices,
                                       int64_t n_states) {
  const int32_t* idx = indices.const_data_ptr<int32_t>();
  for (int64_t i = 0; i < indices.numel(); ++i) {
    MAMBA_CHECK(idx[i] < n_states, op, name, "[", i, "] = ", idx[i], " is out of range for a state pool of ",
                n_states, " rows (negative marks a padding row)");
  }
}

}  // namespace mamba_ext
