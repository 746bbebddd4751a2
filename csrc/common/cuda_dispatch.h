// Host-side helpers of the conv and decode CUDA wrappers: the kernels' element type for a torch dtype,
// 16-byte alignment tests for packet loads, and launch-error reporting that names the op.
#pragma once

#include <ATen/core/Tensor.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common/checks.h"

namespace mamba_ext::cuda {

// Calls fn with a null pointer of the kernels' element type for dtype t (fp32, fp16 or bf16).
template <typename Fn>
void dispatch_float_type(const char* op, at::ScalarType t, Fn&& fn) {
  switch (t) {
    case at::kFloat: fn(static_cast<float*>(nullptr)); break;
    case at::kHalf: fn(static_cast<__half*>(nullptr)); break;
    case at::kBFloat16: fn(static_cast<__nv_bfloat16*>(nullptr)); break;
    default: MAMBA_CHECK(false, op, "unsupported dtype ", t, " on CUDA");
  }
}

// Whether rows of t (all dimensions but the last) start 16-byte aligned given the strides of its leading
// dimensions, so packets of `elts` elements starting at multiples of `elts` are aligned.
inline bool rows_aligned(const at::Tensor& t, int64_t elts) {
  if (reinterpret_cast<uintptr_t>(t.const_data_ptr()) % 16 != 0) return false;
  for (int64_t i = 0; i + 1 < t.dim(); ++i) {
    if (t.size(i) > 1 && (t.stride(i) * t.element_size()) % 16 != 0) return false;
  }
  return (elts * t.element_size()) % 16 == 0;
}

inline void check_launch(const char* op, cudaError_t err) {
  MAMBA_CHECK(err == cudaSuccess, op, "CUDA error: ", cudaGetErrorString(err));
}

}  // namespace mamba_ext::cuda
