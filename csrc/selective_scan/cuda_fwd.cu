// CUDA forward of mamba_ext::selective_scan_fwd: checks, allocation and the launch of fwd_kernel.cuh on
// the current stream of u's device. Instantiations here: 3 input dtypes x 2 (K) x 2 (split pass) = 12 scan
// kernels plus the split combine (see launch_selective_scan_fwd). cu_seqlens (per-sequence initial and last
// states) runs the kSeqStates variant on its seq_idx, built in cuda_fwd_seq_states.cu.
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "selective_scan/cuda_launch.h"
#include "selective_scan/fwd_kernel.cuh"

namespace mamba_ext {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> selective_scan_fwd_cuda(
    const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
    const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias, bool delta_softplus,
    const OptTensor& initial_state, const OptTensor& seq_idx, int64_t chunk_size, const OptTensor& cu_seqlens,
    bool save_states) {
  const char* op = "selective_scan_fwd";
  cuda::check_packed_sequences(op, seq_idx, cu_seqlens);
  cuda::check_cuda_inputs(op, u, chunk_size);
  const ScanInputs in = check_scan_inputs(op, u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, cu_seqlens);
  const c10::cuda::CUDAGuard guard(u.device());
  SelectiveScanParams p = make_scan_params(in, delta_softplus, chunk_size);
  const auto f32 = u.options().dtype(at::kFloat);
  at::Tensor out = at::empty({p.batch, p.dim, p.seqlen}, u.options());
  at::Tensor last_state = at::empty({p.state_rows, p.dim, p.dstate}, f32);
  at::Tensor chunk_states = at::empty({p.batch, p.dim, save_states ? p.n_chunks : 0, p.dstate}, f32);
  // Per-sequence states: the kernel stores the rows of non-empty sequences; an empty one keeps its initial
  // state. Without tokens every row is its initial state.
  if (p.per_sequence_states || p.batch == 0 || p.dim == 0 || p.seqlen == 0) {
    if (in.initial_state) last_state.copy_(*in.initial_state); else last_state.zero_();
  }
  if (p.batch == 0 || p.dim == 0 || p.seqlen == 0) return {out, last_state, chunk_states};
  p.out_batch_stride = out.stride(0);
  p.out_dim_stride = out.stride(1);
  p.out_ptr = out.data_ptr();
  p.last_state_ptr = last_state.data_ptr();
  p.chunk_states_ptr = save_states ? chunk_states.data_ptr() : nullptr;  // null: not stored

  // Splits only to fill the GPU (a split costs a second pass of exps); kFwdMinBlocks blocks fit per SM.
  cuda::ScanLayout layout = cuda::device_layout(p, cuda::kFwdMinBlocks, 0.0, u.element_size());
  layout.vec_io = cuda::forward_rows_aligned16(p, u.element_size());
  cuda::ScanWork work;
  at::Tensor split_work;
  if (layout.n_splits > 1) {
    const int64_t rows = p.batch * p.dim * layout.n_splits, parts = rows * layout.local_parts;
    split_work = cuda::float_workspace(f32, {{&work.split_local, parts * p.dstate},
                                             {&work.split_in, rows * p.dstate},
                                             {&work.split_dtsum, parts}});
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  cuda::dispatch_input_type(op, u.scalar_type(), [&](auto* tag) {
    using input_t = std::remove_pointer_t<decltype(tag)>;
    const auto launch = p.per_sequence_states ? cuda::launch_selective_scan_fwd<input_t, true>
                                              : cuda::launch_selective_scan_fwd<input_t, false>;
    cuda::check_launch(op, launch(p, layout, work, stream));
  });
  return {out, last_state, chunk_states};
}

}  // namespace

TORCH_LIBRARY_IMPL(mamba_ext, CUDA, m) { m.impl("selective_scan_fwd", &selective_scan_fwd_cuda); }

}  // namespace mamba_ext
