// Host side of the CUDA conv kernels' weights: weight and bias as the kernels read them, shared by the
// full-sequence ops (cuda.cu) and the decode step (cuda_update.cu).
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

namespace mamba_ext {

// As they are (contiguous) when they have x's dtype, a bf16 or fp16 model's own parameters, so no cast
// kernel runs per call; otherwise converted to fp32. in_input_dtype tells the kernel which one it reads.
struct KernelWeights {
  at::Tensor weight;
  std::optional<at::Tensor> bias;
  bool in_input_dtype;
};

inline KernelWeights kernel_weights(const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                    at::ScalarType x_dtype) {
  const bool same = weight.scalar_type() == x_dtype;
  const auto as_read = [&](const at::Tensor& t) { return (same ? t : t.to(at::kFloat)).contiguous(); };
  return {as_read(weight), bias ? std::optional<at::Tensor>(as_read(*bias)) : std::nullopt, same};
}

}  // namespace mamba_ext
