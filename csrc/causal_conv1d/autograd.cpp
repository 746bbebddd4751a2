// The public op mamba_ext::causal_conv1d: parses the activation, validates the arguments (turning
// cu_seqlens into the seq_idx the kernels read, common/cu_seqlens.h), then runs the
// internal forward op and, under autograd, a C++ autograd::Function whose backward runs the internal
// backward op (which recomputes the pre-activation from x; nothing but the inputs is saved). The backward
// is deterministic on every backend (no float atomics). Double backward is not supported: the internal
// ops carry autogradNotImplementedFallback, so differentiating the backward raises an error naming
// mamba_ext::causal_conv1d_bwd. causal_conv1d_update is not differentiable (it updates its state in place).
#include <torch/autograd.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include "causal_conv1d/args.h"
#include "common/cu_seqlens.h"
#include "ops.h"

namespace mamba_ext {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

OptTensor defined_or_none(const at::Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }

// Validates the public op's arguments and returns the seq_idx the internal ops get: the given one, or the
// one derived from cu_seqlens (which the internal ops then also get, meaning per-sequence states).
OptTensor checked_seq_idx(const at::Tensor& x, const at::Tensor& weight, const OptTensor& bias,
                          const OptTensor& initial_states, const OptTensor& seq_idx, const OptTensor& cu_seqlens) {
  const char* op = "causal_conv1d";
  check_not_both(op, seq_idx, cu_seqlens);
  const ConvInputs in = check_conv_inputs(op, x, weight, bias, initial_states, seq_idx, cu_seqlens);
  return cu_seqlens ? OptTensor(seq_idx_from_cu_seqlens(*cu_seqlens, in.seqlen)) : seq_idx;
}

class CausalConv1dFunction : public torch::autograd::Function<CausalConv1dFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                               const OptTensor& bias, bool silu, const OptTensor& initial_states,
                               const OptTensor& seq_idx, const OptTensor& cu_seqlens) {
    auto [out, final_states] = causal_conv1d_fwd(x, weight, bias, initial_states, seq_idx, silu, cu_seqlens);
    ctx->save_for_backward({x, weight, bias.value_or(at::Tensor()), initial_states.value_or(at::Tensor()),
                            seq_idx.value_or(at::Tensor()), cu_seqlens.value_or(at::Tensor())});
    ctx->saved_data["silu"] = silu;
    ctx->set_materialize_grads(false);
    return {out, final_states};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &bias = saved[2], &initial_states = saved[3];
    const at::Tensor dout = grads[0].defined() ? grads[0] : at::zeros_like(x);
    // cu_seqlens asks the backward for per-sequence states. Without initial states and without a gradient
    // flowing into the final states none is involved, and seq_idx alone gives the same dx, dweight and dbias:
    // on CUDA that skips building the extended row (causal_conv1d/cuda_sequence_states.h), while the CPU
    // kernels are faster with cu_seqlens (whole sequences instead of masked taps).
    const bool states_involved = initial_states.defined() || grads[1].defined();
    const at::Tensor cu_seqlens = states_involved || !x.is_cuda() ? saved[5] : at::Tensor();
    auto [dx, dweight, dbias, dinitial_states] =
        causal_conv1d_bwd(dout, defined_or_none(grads[1]), x, saved[1], defined_or_none(bias),
                          defined_or_none(initial_states), defined_or_none(saved[4]), ctx->saved_data["silu"].toBool(),
                          defined_or_none(cu_seqlens));
    return {dx,
            dweight,
            bias.defined() ? dbias : at::Tensor(),
            at::Tensor(),  // activation
            initial_states.defined() ? dinitial_states : at::Tensor(),
            at::Tensor(),   // seq_idx
            at::Tensor()};  // cu_seqlens
  }
};

std::tuple<at::Tensor, at::Tensor> causal_conv1d_autograd(const at::Tensor& x, const at::Tensor& weight,
                                                          const OptTensor& bias,
                                                          std::optional<c10::string_view> activation,
                                                          const OptTensor& initial_states, const OptTensor& seq_idx,
                                                          const OptTensor& cu_seqlens) {
  const bool silu = parse_activation("causal_conv1d", activation);
  const OptTensor ids = checked_seq_idx(x, weight, bias, initial_states, seq_idx, cu_seqlens);
  auto outs = CausalConv1dFunction::apply(x, weight, bias, silu, initial_states, ids, cu_seqlens);
  return {outs[0], outs[1]};
}

// Below autograd (inference mode, or tensors that need no grad): the forward alone.
std::tuple<at::Tensor, at::Tensor> causal_conv1d_forward_only(const at::Tensor& x, const at::Tensor& weight,
                                                              const OptTensor& bias,
                                                              std::optional<c10::string_view> activation,
                                                              const OptTensor& initial_states,
                                                              const OptTensor& seq_idx,
                                                              const OptTensor& cu_seqlens) {
  const bool silu = parse_activation("causal_conv1d", activation);
  const OptTensor ids = checked_seq_idx(x, weight, bias, initial_states, seq_idx, cu_seqlens);
  return causal_conv1d_fwd(x, weight, bias, initial_states, ids, silu, cu_seqlens);
}

}  // namespace

TORCH_LIBRARY_IMPL(mamba_ext, Autograd, m) {
  m.impl("causal_conv1d", &causal_conv1d_autograd);
  m.impl("causal_conv1d_fwd", torch::autograd::autogradNotImplementedFallback());
  m.impl("causal_conv1d_bwd", torch::autograd::autogradNotImplementedFallback());
  m.impl("causal_conv1d_update", torch::autograd::autogradNotImplementedFallback());
}

TORCH_LIBRARY_IMPL(mamba_ext, ADInplaceOrView, m) {
  m.impl("causal_conv1d_update", torch::autograd::autogradNotImplementedInplaceOrViewFallback());
}

TORCH_LIBRARY_IMPL(mamba_ext, CompositeExplicitAutograd, m) {
  m.impl("causal_conv1d", &causal_conv1d_forward_only);
}

}  // namespace mamba_ext
