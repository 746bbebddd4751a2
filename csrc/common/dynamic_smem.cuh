// Opting a kernel into more dynamic shared memory than the default 48 KB, once. cudaFuncSetAttribute is a
// driver call, and the launch code made it on every launch, though the setting stays with the kernel (per
// device) for the life of the process; under the profiler each such call took 5-20 us of the GPU machine's
// host time, part of the per-call overhead that small shapes pay. This remembers, per kernel and device, the largest size
// granted and calls the driver only when a launch needs more.
#pragma once

#include <cuda_runtime.h>

#include <map>
#include <mutex>
#include <utility>

namespace mamba_ext::cuda {

template <typename Kernel>
cudaError_t allow_dynamic_smem(Kernel* kernel, size_t bytes) {
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  static std::mutex mutex;
  static std::map<std::pair<const void*, int>, size_t> granted;
  const std::lock_guard<std::mutex> lock(mutex);
  size_t& have = granted[{reinterpret_cast<const void*>(kernel), device}];
  if (bytes <= have) return cudaSuccess;
  err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
  if (err == cudaSuccess) have = bytes;
  return err;
}

}  // namespace mamba_ext::cuda
