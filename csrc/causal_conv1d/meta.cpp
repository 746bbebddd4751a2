// Meta (shape-only) kernels of the causal-conv1d ops: used by torch.compile's fake tensors and
// torch.library.opcheck. Sizes are SymInts so dynamic shapes trace without specializing.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "causal_conv1d/args.h"

namespace mamba_ext {
namespace {

std::tuple<at::Tensor, at::Tensor> causal_conv1d_fwd_meta(const at::Tensor& x, const at::Tensor& weight,
                                                          const OptTensor& bias, const OptTensor& initial_states,
                                                          const OptTensor& seq_idx, bool /*silu*/,
                                                          const OptTensor& cu_seqlens) {
  const ConvInputs in = check_conv_inputs("causal_conv1d_fwd", x, weight, bias, initial_states, seq_idx, cu_seqlens);
  return {at::empty_symint({in.batch, in.dim, in.seqlen}, x.options()),
          at::empty_symint({in.state_rows, in.dim, in.width - 1}, x.options())};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> causal_conv1d_bwd_meta(
    const at::Tensor& dout, const OptTensor& dfinal_states, const at::Tensor& x, const at::Tensor& weight,
    const OptTensor& bias, const OptTensor& initial_states, const OptTensor& seq_idx, bool /*silu*/,
    const OptTensor& cu_seqlens) {
  const char* op = "causal_conv1d_bwd";
  const ConvInputs in = check_conv_inputs(op, x, weight, bias, initial_states, seq_idx, cu_seqlens);
  check_conv_grads(op, in, dout, dfinal_states);
  return {at::empty_symint({in.batch, in.dim, in.seqlen}, x.options()),
          at::empty_symint({in.dim, in.width}, weight.options()), at::empty_symint({in.dim}, weight.options()),
          at::empty_symint({in.state_rows, in.dim, in.width - 1}, x.options())};
}

at::Tensor causal_conv1d_update_meta(const at::Tensor& x, at::Tensor& conv_state, const at::Tensor& weight,
                                     const OptTensor& bias, std::optional<c10::string_view> activation,
                                     const OptTensor& conv_state_indices) {
  const char* op = "causal_conv1d_update";
  parse_activation(op, activation);
  check_conv_update_inputs(op, x, conv_state, weight, bias, conv_state_indices);
  return at::empty_symint(x.sym_sizes(), x.options());
}

}  // namespace

TORCH_LIBRARY_IMPL(mamba_ext, Meta, m) {
  m.impl("causal_conv1d_fwd", &causal_conv1d_fwd_meta);
  m.impl("causal_conv1d_bwd", &causal_conv1d_bwd_meta);
  m.impl("causal_conv1d_update", &causal_conv1d_update_meta);
}

}  // namespace mamba_ext
