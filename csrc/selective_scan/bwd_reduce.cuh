// The last step of the CUDA backward: sums the per-block partial gradients (ScanWork's *_part arrays) into
// dA, dB, dC, dD and ddelta_bias, every output in a fixed order (bitwise reproducible, no atomics), in one
// launch. Five torch sums plus two dtype conversions took seven launches and as many allocations; at
// (16, 1536, 512) they ran 49 us on the H100 where this kernel runs 28 us (docs/performance.md, v9).
//
// Each output is a ReduceJob: out[i] = sum over j < n_terms of part[base(i) + j * term_stride], with
// base(i) = (i / inner) * outer_stride + i % inner. dA, dD, ddelta_bias and constant dB/dC sum (batch,
// split) slices; input-dependent dB/dC sum the channel blocks of each (batch, group) and are written in
// B/C's dtype. Instantiations: 3 output dtypes (fp32, fp16, bf16; for input-dependent dB/dC).
#pragma once

#include <cstdint>

#include "common/cuda_dtype.cuh"

namespace mamba_ext::cuda {

struct ReduceJob {
  const float* part = nullptr;
  void* out = nullptr;
  int64_t n_out = 0, n_terms = 0, term_stride = 0, inner = 1, outer_stride = 0;
  bool as_input_type = false;  // write input_t (B/C's dtype) instead of fp32
};

constexpr int kMaxReduceJobs = 5;
struct ReduceJobs {
  ReduceJob job[kMaxReduceJobs];
  int count = 0;
};

template <typename input_t>
__global__ void __launch_bounds__(256) bwd_reduce_kernel(ReduceJobs jobs) {
  const ReduceJob& j = jobs.job[blockIdx.y];
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < j.n_out; i += stride) {
    const float* src = j.part + (i / j.inner) * j.outer_stride + i % j.inner;
    // Two sums (even and odd terms) keep two loads in flight per add; the order is still fixed.
    float even = 0.f, odd = 0.f;
    int64_t t = 0;
    for (; t + 1 < j.n_terms; t += 2) {
      even += src[t * j.term_stride];
      odd += src[(t + 1) * j.term_stride];
    }
    if (t < j.n_terms) even += src[t * j.term_stride];
    const float sum = even + odd;
    if (j.as_input_type) {
      static_cast<input_t*>(j.out)[i] = from_float<input_t>(sum);
    } else {
      static_cast<float*>(j.out)[i] = sum;
    }
  }
}

template <typename input_t>
cudaError_t launch_bwd_reduce(const ReduceJobs& jobs, int num_sms, cudaStream_t stream) {
  int64_t most = 1;
  for (int i = 0; i < jobs.count; ++i) most = jobs.job[i].n_out > most ? jobs.job[i].n_out : most;
  const int64_t blocks = (most + 255) / 256, cap = int64_t(num_sms) * 8;  // 8 blocks of 256 threads per SM
  const dim3 grid(unsigned(blocks < cap ? blocks : cap), unsigned(jobs.count));
  bwd_reduce_kernel<input_t><<<grid, 256, 0, stream>>>(jobs);
  return cudaGetLastError();
}

}  // namespace mamba_ext::cuda
