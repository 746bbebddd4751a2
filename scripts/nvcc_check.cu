// Compile check of the torch-free CUDA kernel headers with plain nvcc (no CUDA torch needed): instantiates
// every kernel the extension launches. Built by scripts/nvcc_check.sh for sm_80 and sm_90.
#include "selective_scan/bwd_kernel.cuh"
#include "selective_scan/final_states_kernel.cuh"
#include "selective_scan/fwd_kernel.cuh"

namespace mamba_ext::cuda {
#define MAMBA_INSTANTIATE(T)                                                                                 \
  template cudaError_t launch_selective_scan_fwd<T>(const SelectiveScanParams&, const ScanLayout&,           \
                                                    const ScanWork&, cudaStream_t);                         \
  template cudaError_t launch_selective_scan_bwd<T>(const SelectiveScanParams&, const ScanLayout&,           \
                                                    const ScanWork&, cudaStream_t);                         \
  template cudaError_t launch_sequence_final_states<T>(const SelectiveScanParams&, const int64_t*, int64_t,  \
                                                       float*, cudaStream_t);
MAMBA_INSTANTIATE(float)
MAMBA_INSTANTIATE(__half)
MAMBA_INSTANTIATE(__nv_bfloat16)
}  // namespace mamba_ext::cuda

int main() { return 0; }
