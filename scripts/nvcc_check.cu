// Compile check of the torch-free CUDA kernel headers with plain nvcc (no CUDA torch needed): instantiates
// every kernel the extension launches. Built by scripts/nvcc_check.sh for sm_80 and sm_90.
#include "selective_scan/bwd_launch.cuh"
#include "selective_scan/bwd_reduce.cuh"
#include "selective_scan/fwd_kernel.cuh"

namespace mamba_ext::cuda {
#define MAMBA_INSTANTIATE(T, kSeqStates)                                                                    \
  template cudaError_t launch_selective_scan_fwd<T, kSeqStates>(const SelectiveScanParams&, const ScanLayout&, \
                                                                const ScanWork&, cudaStream_t);            \
  template cudaError_t launch_selective_scan_bwd<T, kSeqStates>(const SelectiveScanParams&, const ScanLayout&, \
                                                                const ScanWork&, cudaStream_t);
MAMBA_INSTANTIATE(float, false)
MAMBA_INSTANTIATE(__half, false)
MAMBA_INSTANTIATE(__nv_bfloat16, false)
MAMBA_INSTANTIATE(float, true)
MAMBA_INSTANTIATE(__half, true)
MAMBA_INSTANTIATE(__nv_bfloat16, true)
template cudaError_t launch_bwd_reduce<float>(const ReduceJobs&, int, cudaStream_t);
template cudaError_t launch_bwd_reduce<__half>(const ReduceJobs&, int, cudaStream_t);
template cudaError_t launch_bwd_reduce<__nv_bfloat16>(const ReduceJobs&, int, cudaStream_t);
}  // namespace mamba_ext::cuda

int main() { return 0; }
