// Host-side helpers shared by the CUDA forward and backward wrappers (cuda_fwd.cu, cuda_bwd.cu): argument
// checks specific to the CUDA kernels, the launch layout for the current device, and error reporting.
#pragma once

#include <c10/cuda/CUDAStream.h>

#include "common/checks.h"
#include "selective_scan/scan_args.h"
#include "selective_scan/scan_common.cuh"

namespace mamba_ext::cuda {

inline void check_cuda_inputs(const char* op, const at::Tensor& u, int64_t chunk_size) {
  MAMBA_CHECK(u.scalar_type() != at::kDouble, op,
              "u is float64, which the CUDA kernels do not support (they keep fp32 states); use float32, "
              "float16 or bfloat16 on CUDA, or run float64 on the CPU");
  MAMBA_CHECK(chunk_size == kTile, op, "chunk_size must be ", kTile, " on CUDA (the kernels' tile length), got ",
              chunk_size);
}

inline void check_launch(const char* op, cudaError_t err) {
  MAMBA_CHECK(err == cudaSuccess, op, "CUDA error: ", cudaGetErrorString(err));
}

// blocks_per_sm: how many blocks of the kernel we expect to fit on one multiprocessor; fewer rows than
// that fills are split in time.
inline ScanLayout device_layout(const SelectiveScanParams& p, int blocks_per_sm) {
  int device = 0, sms = 0;
  check_launch("selective_scan", cudaGetDevice(&device));
  check_launch("selective_scan", cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return make_layout(p, sms, blocks_per_sm);
}

// Calls fn with a null pointer of the kernels' element type for u's dtype (fp32, fp16 or bf16).
template <typename Fn>
void dispatch_input_type(const char* op, at::ScalarType t, Fn&& fn) {
  switch (t) {
    case at::kFloat: fn(static_cast<float*>(nullptr)); break;
    case at::kHalf: fn(static_cast<__half*>(nullptr)); break;
    case at::kBFloat16: fn(static_cast<__nv_bfloat16*>(nullptr)); break;
    default: MAMBA_CHECK(false, op, "unsupported dtype ", t, " on CUDA");
  }
}

}  // namespace mamba_ext::cuda
