// Argument checks shared by every op. Each message starts with "mamba_ext.<op>: <argument> ..." so a user
// sees at once which call and which argument is wrong.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>
#include <string>

namespace mamba_ext {

#define MAMBA_CHECK(cond, op, ...) TORCH_CHECK(cond, "mamba_ext.", op, ": ", __VA_ARGS__)

inline void check_rank(const char* op, const char* name, const at::Tensor& t, int64_t rank) {
  MAMBA_CHECK(t.dim() == rank, op, name, " must have ", rank, " dimensions, got shape ", t.sym_sizes());
}

// Sizes are compared as SymInts so the same checks run under torch.compile's fake tensors with dynamic shapes.
inline void check_shape(const char* op, const char* name, const at::Tensor& t, c10::SymIntArrayRef expected,
                        const char* layout) {
  MAMBA_CHECK(t.sym_sizes() == expected, op, name, " must have shape ", layout, " = ", expected, ", got ",
              t.sym_sizes());
}

inline void check_dtype(const char* op, const char* name, const at::Tensor& t, at::ScalarType expected,
                        const char* why) {
  MAMBA_CHECK(t.scalar_type() == expected, op, name, " must have dtype ", expected, " (", why, "), got ",
              t.scalar_type());
}

inline void check_device(const char* op, const char* name, const at::Tensor& t, const at::Tensor& ref,
                         const char* ref_name = "u") {
  MAMBA_CHECK(t.device() == ref.device(), op, name, " is on ", t.device(), " but ", ref_name, " is on ",
              ref.device(), "; all tensors must be on the same device");
}

inline void check_floating(const char* op, const char* name, const at::Tensor& t) {
  const auto s = t.scalar_type();
  MAMBA_CHECK(s == at::kFloat || s == at::kHalf || s == at::kBFloat16 || s == at::kDouble, op, name,
              " must be float32, float16, bfloat16 or float64, got ", s);
}

// Returns t unchanged when its last (time) dimension is contiguous, else a contiguous copy: kernels need
// unit stride along time but accept any batch/channel strides.
inline at::Tensor time_contiguous(const at::Tensor& t) {
  return (t.sym_size(-1) <= 1 || t.sym_stride(-1) == 1) ? t : t.contiguous();
}

}  // namespace mamba_ext
