// The per-sequence-states half of the CUDA forward (fwd_kernel.cuh, kSeqStates = true), which cuda_fwd.cu
// launches for cu_seqlens: built in its own file so it compiles in parallel with the other half.
// Instantiations: 3 input dtypes x 2 (K) x 2 (split pass) = 12 scan kernels (the combine is cuda_fwd.cu's).
#include "selective_scan/fwd_kernel.cuh"

namespace mamba_ext::cuda {
MAMBA_EXT_SEQ_STATES_LAUNCHES(, launch_selective_scan_fwd)
}  // namespace mamba_ext::cuda
