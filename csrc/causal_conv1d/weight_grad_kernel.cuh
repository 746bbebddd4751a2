// The last step of the causal_conv1d backward on CUDA: dweight (dim, W) and dbias (dim,) from the backward
// kernel's per-(batch, time chunk) parts, summed in a fixed order (deterministic, no atomics) and written in
// the weight's dtype. One kernel where a sum, two slices and two casts were four launches.
// Instantiations: 3 weight dtypes.
#pragma once

#include <cstdint>

#include "common/cuda_dtype.cuh"

namespace mamba_ext::cuda {

constexpr int kWeightGradThreads = 256;

// partial: (n_parts, dim, width + 1) fp32, entry width of a row holding the dbias part. Thread i sums entry
// i of every part, so a warp reads consecutive floats of each part.
template <typename weight_t>
__global__ void __launch_bounds__(kWeightGradThreads)
    conv_weight_grad_kernel(const float* partial, int64_t n_parts, int64_t dim, int width, weight_t* dweight,
                            weight_t* dbias) {
  const int64_t entries = dim * (width + 1);
  const int64_t i = int64_t(blockIdx.x) * kWeightGradThreads + threadIdx.x;
  if (i >= entries) return;
  float sum = 0.f;
  for (int64_t part = 0; part < n_parts; ++part) sum += partial[part * entries + i];
  const int64_t d = i / (width + 1);
  const int k = static_cast<int>(i - d * (width + 1));
  if (k < width) {
    dweight[d * width + k] = from_float<weight_t>(sum);
  } else {
    dbias[d] = from_float<weight_t>(sum);
  }
}

}  // namespace mamba_ext::cuda
