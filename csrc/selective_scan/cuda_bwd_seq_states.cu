// The per-sequence-states half of the CUDA backward (bwd_launch.cuh, kSeqStates = true),
// which cuda_bwd.cu launches for cu_seqlens: built in its own file so it compiles in parallel with the
// other half. Instantiations: 3 input dtypes x 2 (K) x 2 (full, local) = 12 scan kernels.
#include "selective_scan/bwd_launch.cuh"

namespace mamba_ext::cuda {
MAMBA_EXT_SEQ_STATES_LAUNCHES(, launch_selective_scan_bwd)
}  // namespace mamba_ext::cuda
