// Meta (shape-only) kernels of the internal selective-scan ops: used by torch.compile's fake tensors and
// torch.library.opcheck. Sizes are SymInts so dynamic shapes trace without specializing.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "selective_scan/scan_args.h"

namespace mamba_ext {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> selective_scan_fwd_meta(
    const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
    const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias, bool /*delta_softplus*/,
    const OptTensor& initial_state, const OptTensor& seq_idx, int64_t chunk_size, const OptTensor& cu_seqlens,
    bool save_states) {
  const char* op = "selective_scan_fwd";
  const ScanInputs in =
      check_scan_inputs(op, u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, cu_seqlens);
  const c10::SymInt n_chunks = scan_num_chunks(op, in.seqlen, chunk_size);
  const auto state_opts = u.options().dtype(in.state_dtype);
  return {at::empty_symint({in.batch, in.dim, in.seqlen}, u.options()),
          at::empty_symint({in.state_rows, in.dim, in.dstate}, state_opts),
          at::empty_symint({in.batch, in.dim, save_states ? n_chunks : c10::SymInt(0), in.dstate}, state_opts)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
selective_scan_bwd_meta(const at::Tensor& dout, const OptTensor& dlast_state, const at::Tensor& u,
                        const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                        const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias, bool /*delta_softplus*/,
                        const OptTensor& initial_state, const OptTensor& seq_idx, const at::Tensor& chunk_states,
                        int64_t chunk_size, bool /*deterministic*/, const OptTensor& cu_seqlens) {
  const char* op = "selective_scan_bwd";
  const ScanInputs in =
      check_scan_inputs(op, u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, cu_seqlens);
  check_scan_grads(op, in, dout, dlast_state, chunk_states, chunk_size);
  const auto state_opts = u.options().dtype(in.state_dtype);
  const auto like_u = [&] { return at::empty_symint({in.batch, in.dim, in.seqlen}, u.options()); };
  const auto param = [&](c10::SymIntArrayRef shape) { return at::empty_symint(shape, state_opts); };
  return {like_u(),
          like_u(),
          param({in.dim, in.dstate}),
          at::empty_symint(B.sym_sizes(), B.options()),
          at::empty_symint(C.sym_sizes(), C.options()),
          param({in.dim}),
          z ? like_u() : at::empty({0}, u.options()),
          param({in.dim}),
          param({in.state_rows, in.dim, in.dstate})};
}

}  // namespace

TORCH_LIBRARY_IMPL(mamba_ext, Meta, m) {
  m.impl("selective_scan_fwd", &selective_scan_fwd_meta);
  m.impl("selective_scan_bwd", &selective_scan_bwd_meta);
}

}  // namespace mamba_ext
