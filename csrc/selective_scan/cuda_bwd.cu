// CUDA backward of mamba_ext::selective_scan_bwd: checks, workspace, the launch of bwd_launch.cuh on the
// current stream, and the fixed-order sums of the per-block partial gradients (bwd_reduce.cuh). There are no
// atomics, so the gradients are bitwise reproducible whether or not `deterministic` is set; the flag costs
// nothing.
// cu_seqlens (per-sequence initial states and last-state gradients) runs the kSeqStates variant on its
// seq_idx, built in cuda_bwd_seq_states.cu.
// Instantiations here: 3 input dtypes x 2 (K) x 2 (full, local) = 12, the split combine, and 3 of the sums.
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "selective_scan/bwd_launch.cuh"
#include "selective_scan/bwd_reduce.cuh"
#include "selective_scan/cuda_launch.h"

namespace mamba_ext {
namespace {

ScanGrads selective_scan_bwd_cuda(const at::Tensor& dout, const OptTensor& dlast_state, const at::Tensor& u,
                                  const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                                  const at::Tensor& C, const OptTensor& D, const OptTensor& z,
                                  const OptTensor& delta_bias, bool delta_softplus, const OptTensor& initial_state,
                                  const OptTensor& seq_idx, const at::Tensor& chunk_states, int64_t chunk_size,
                                  bool /*deterministic*/, const OptTensor& cu_seqlens) {
  const char* op = "selective_scan_bwd";
  cuda::check_packed_sequences(op, seq_idx, cu_seqlens);
  cuda::check_cuda_inputs(op, u, chunk_size);
  const ScanInputs in = check_scan_inputs(op, u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, cu_seqlens);
  check_scan_grads(op, in, dout, dlast_state, chunk_states, chunk_size);
  const c10::cuda::CUDAGuard guard(u.device());
  SelectiveScanParams p = make_scan_params(in, delta_softplus, chunk_size);
  const at::Tensor dout_t = time_contiguous(dout), states = chunk_states.contiguous();
  const OptTensor dlast = dlast_state ? OptTensor(dlast_state->contiguous()) : std::nullopt;
  const auto f32 = u.options().dtype(at::kFloat);
  const int64_t Bt = p.batch, Dm = p.dim, N = p.dstate, L = p.seqlen, G = p.n_groups;
  at::Tensor du = at::empty({Bt, Dm, L}, u.options()), ddelta = at::empty({Bt, Dm, L}, u.options());
  at::Tensor dz = z ? at::empty({Bt, Dm, L}, u.options()) : at::empty({0}, u.options());
  at::Tensor dinitial = at::empty({p.state_rows, Dm, N}, f32);
  // Per-sequence states: the kernel stores the rows of non-empty sequences; an empty one passes dlast_state
  // on. Without tokens every row does.
  if (p.per_sequence_states || Bt == 0 || Dm == 0 || L == 0) {
    if (dlast) dinitial.copy_(*dlast); else dinitial.zero_();
  }
  if (Bt == 0 || Dm == 0 || L == 0) {
    return {du, ddelta, at::zeros({Dm, N}, f32), at::zeros_like(B), at::zeros_like(C), at::zeros({Dm}, f32), dz,
            at::zeros({Dm}, f32), dinitial};
  }
  p.dout_batch_stride = dout_t.stride(0);
  p.dout_dim_stride = dout_t.stride(1);
  p.dout_ptr = dout_t.const_data_ptr();
  p.dlast_state_ptr = dlast ? dlast->const_data_ptr() : nullptr;
  p.chunk_states_ptr = const_cast<void*>(states.const_data_ptr());
  p.du_ptr = du.data_ptr();
  p.ddelta_ptr = ddelta.data_ptr();
  p.dz_ptr = dz.data_ptr();
  p.dinitial_state_ptr = dinitial.data_ptr();

  // Three blocks per SM (72 KB of shared memory each for N = 16); the zero-start split pass costs about 15%
  // of the backward over the same steps (measured at (1, 1536, 131072) with its parts filling the GPU; 25%
  // before), worth it when it evens out the waves.
  const int64_t es = u.element_size();
  cuda::ScanLayout l = cuda::device_layout(p, 3, 0.15, es);
  p.out_ptr = du.data_ptr();  // du, ddelta, dz share one contiguous layout: check it through the out slot
  p.out_batch_stride = du.stride(0);
  p.out_dim_stride = du.stride(1);
  l.vec_io = cuda::forward_rows_aligned16(p, es) && cuda::rows_aligned16(ddelta.data_ptr(), es, {}) &&
             (!z || cuda::rows_aligned16(dz.data_ptr(), es, {})) &&
             cuda::rows_aligned16(p.dout_ptr, es, {p.dout_batch_stride, p.dout_dim_stride});
  p.out_ptr = nullptr;
  const int64_t S = l.n_splits, n_cblocks = l.n_cblocks;
  const auto bc_part_size = [&](bool is_variable) {
    return is_variable ? Bt * G * n_cblocks * N * L : Bt * S * Dm * N;
  };
  const int64_t split_rows = S > 1 ? Bt * Dm * S : 0, split_parts = split_rows * l.local_parts;
  cuda::ScanWork w;
  const at::Tensor workspace = cuda::float_workspace(
      f32, {{&w.dA_part, Bt * S * Dm * N}, {&w.dD_part, Bt * S * Dm}, {&w.ddelta_bias_part, Bt * S * Dm},
            {&w.dB_part, bc_part_size(p.is_variable_B)}, {&w.dC_part, bc_part_size(p.is_variable_C)},
            {&w.split_local, split_parts * N}, {&w.split_in, split_rows * N}, {&w.split_dtsum, split_parts}});

  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  cuda::dispatch_input_type(op, u.scalar_type(), [&](auto* tag) {
    using input_t = std::remove_pointer_t<decltype(tag)>;
    const auto launch = p.per_sequence_states ? cuda::launch_selective_scan_bwd<input_t, true>
                                              : cuda::launch_selective_scan_bwd<input_t, false>;
    cuda::check_launch(op, launch(p, l, w, stream));
  });

  // Outputs of the fixed-order sums (bwd_reduce.cuh): input-dependent dB/dC in B/C's shape and dtype,
  // everything else fp32. Allocated after the scan's launch: the host's time here then overlaps the scan
  // instead of delaying its start (the GPU waits on the host between the forward and the backward).
  at::Tensor dA = at::empty({Dm, N}, f32), dD = at::empty({Dm}, f32), ddelta_bias = at::empty({Dm}, f32);
  const auto bc_grad = [&](const at::Tensor& orig, bool is_variable) {
    return is_variable ? at::empty(orig.sizes(), orig.options()) : at::empty({Dm, N}, f32);
  };
  at::Tensor dB = bc_grad(B, p.is_variable_B), dC = bc_grad(C, p.is_variable_C);
  cuda::ReduceJobs jobs;
  // Sum of the (batch, split) slices of a (batch, S, rest) partial.
  const auto over_batch_and_splits = [&](const float* part, const at::Tensor& out) {
    cuda::ReduceJob& j = jobs.job[jobs.count++];
    j.part = part;
    j.out = out.data_ptr();
    j.n_out = j.inner = j.term_stride = out.numel();
    j.n_terms = Bt * S;
  };
  // Sum over the channel blocks of a (batch * groups, n_cblocks, N * seqlen) partial, in B/C's dtype.
  const auto over_channel_blocks = [&](const float* part, const at::Tensor& out) {
    cuda::ReduceJob& j = jobs.job[jobs.count++];
    j.part = part;
    j.out = out.data_ptr();
    j.n_out = out.numel();
    j.inner = j.term_stride = N * L;
    j.outer_stride = n_cblocks * N * L;
    j.n_terms = n_cblocks;
    j.as_input_type = true;
  };
  over_batch_and_splits(w.dA_part, dA);
  over_batch_and_splits(w.dD_part, dD);
  over_batch_and_splits(w.ddelta_bias_part, ddelta_bias);
  if (p.is_variable_B) over_channel_blocks(w.dB_part, dB); else over_batch_and_splits(w.dB_part, dB);
  if (p.is_variable_C) over_channel_blocks(w.dC_part, dC); else over_batch_and_splits(w.dC_part, dC);
  cuda::dispatch_input_type(op, u.scalar_type(), [&](auto* tag) {
    using input_t = std::remove_pointer_t<decltype(tag)>;
    cuda::check_launch(op, cuda::launch_bwd_reduce<input_t>(jobs, cuda::sm_count(), stream));
  });
  return {du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial};
}

}  // namespace

TORCH_LIBRARY_IMPL(mamba_ext, CUDA, m) { m.impl("selective_scan_bwd", &selective_scan_bwd_cuda); }

}  // namespace mamba_ext
