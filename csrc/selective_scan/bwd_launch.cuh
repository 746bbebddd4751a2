// Launch of the CUDA backward (bwd_kernel.cuh, with the split passes of bwd_split.cuh) on a stream: the
// zero-start split pass and the chain when the layout has S > 1 time splits, then the full backward.
//
// Instantiations: 3 input dtypes x K in {4, 8} x kSeqStates = 12 of bwd_kernel; with bwd_split.cuh, 24 scan
// kernels and 2 combine; cuda_bwd.cu builds kSeqStates = false, cuda_bwd_seq_states.cu kSeqStates = true.
#pragma once

#include "common/dynamic_smem.cuh"
#include "selective_scan/bwd_kernel.cuh"
#include "selective_scan/bwd_split.cuh"

namespace mamba_ext::cuda {

template <typename input_t, int K, bool kSeqStates>
cudaError_t launch_bwd_k(const SelectiveScanParams& p, const ScanLayout& l, const ScanWork& w, cudaStream_t stream) {
  const size_t smem = bwd_smem_bytes(l);
  const size_t local_smem = bwd_local_smem_bytes(l);
  cudaError_t err = allow_dynamic_smem(bwd_kernel<input_t, K, kSeqStates>, smem);
  if (err != cudaSuccess) return err;
  const unsigned gy = unsigned(p.batch * p.n_groups);
  if (l.n_splits > 1) {
    err = allow_dynamic_smem(bwd_local_kernel<input_t, K, kSeqStates>, local_smem);
    if (err != cudaSuccess) return err;
    const dim3 grid(unsigned(l.n_cblocks), gy, unsigned((l.n_splits - 1) * l.local_parts));
    bwd_local_kernel<input_t, K, kSeqStates><<<grid, kThreads, local_smem, stream>>>(p, l, w);
    const int64_t total = p.batch * p.dim * p.dstate;
    bwd_combine_kernel<kSeqStates><<<unsigned((total + 255) / 256), 256, 0, stream>>>(p, l, w);
  }
  bwd_kernel<input_t, K, kSeqStates><<<dim3(unsigned(l.n_cblocks), gy, unsigned(l.n_splits)), kThreads, smem, stream>>>(p, l, w);
  return cudaGetLastError();
}

// Entry point for one input dtype and kind of packing: 2 (K) x 2 (full, local) instantiations. kSeqStates
// (p.per_sequence_states) is instantiated in its own file, so the two halves compile in parallel.
template <typename input_t, bool kSeqStates>
cudaError_t launch_selective_scan_bwd(const SelectiveScanParams& p, const ScanLayout& l, const ScanWork& w,
                                      cudaStream_t stream) {
  return l.K == 4 ? launch_bwd_k<input_t, 4, kSeqStates>(p, l, w, stream)
                  : launch_bwd_k<input_t, 8, kSeqStates>(p, l, w, stream);
}

// Declared here, built in cuda_bwd_seq_states.cu.
MAMBA_EXT_SEQ_STATES_LAUNCHES(extern, launch_selective_scan_bwd)

}  // namespace mamba_ext::cuda
