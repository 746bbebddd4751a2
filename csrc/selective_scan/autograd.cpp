// The public op mamba_ext::selective_scan: validates its arguments (turning cu_seqlens into the seq_idx the
// kernels read, common/cu_seqlens.h), then runs the internal forward op and,
// under autograd, a C++ autograd::Function whose backward runs the internal backward op (which recomputes
// states from the saved chunk_states). Living in C++, it gives C++ callers gradients without Python.
// Double backward is not supported: the internal ops carry autogradNotImplementedFallback, so
// differentiating the backward raises an error naming mamba_ext::selective_scan_bwd.
#include <ATen/Context.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include "common/checks.h"
#include "common/cu_seqlens.h"
#include "ops.h"
#include "selective_scan/cpu_rows.h"
#include "selective_scan/scan_args.h"

namespace mamba_ext {

// The CUDA kernels process and checkpoint chunks of this many steps (kTile in selective_scan/scan_common.cuh).
constexpr int64_t kCudaChunkSize = 32;

int64_t selective_scan_chunk_size(c10::DeviceType device) {
  return device == c10::DeviceType::CUDA ? kCudaChunkSize : cpu::kCpuChunkSize;
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

OptTensor defined_or_none(const at::Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }

// Validates the public op's arguments and returns the seq_idx the internal ops get: the given one, or the
// one derived from cu_seqlens (which the internal ops then also get, meaning per-sequence states).
OptTensor checked_seq_idx(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                          const at::Tensor& C, const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias,
                          const OptTensor& initial_state, const OptTensor& seq_idx, const OptTensor& cu_seqlens) {
  const char* op = "selective_scan";
  check_not_both(op, seq_idx, cu_seqlens);
  const ScanInputs in = check_scan_inputs(op, u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, cu_seqlens);
  return cu_seqlens ? OptTensor(seq_idx_from_cu_seqlens(*cu_seqlens, in.seqlen)) : seq_idx;
}

// True when pred holds for any tensor input of the op (absent optional inputs excluded).
template <typename Pred>
bool any_input(Pred pred, const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
               const at::Tensor& C, const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias,
               const OptTensor& initial_state) {
  const auto opt = [&](const OptTensor& t) { return t && pred(*t); };
  return pred(u) || pred(delta) || pred(A) || pred(B) || pred(C) || opt(D) || opt(z) || opt(delta_bias) ||
         opt(initial_state);
}

class SelectiveScanFunction : public torch::autograd::Function<SelectiveScanFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& u, const at::Tensor& delta,
                               const at::Tensor& A, const at::Tensor& B, const at::Tensor& C, const OptTensor& D,
                               const OptTensor& z, const OptTensor& delta_bias, bool delta_softplus,
                               const OptTensor& initial_state, const OptTensor& seq_idx,
                               const OptTensor& cu_seqlens) {
    const int64_t chunk_size = selective_scan_chunk_size(u.device().type());
    // Grad mode is off in here, so the internal op's autograd fallback would only box its arguments and
    // redispatch; skipping it saves that host time before the kernel launch.
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [out, last_state, chunk_states] = selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                                              initial_state, seq_idx, chunk_size, cu_seqlens);
    ctx->save_for_backward({u, delta, A, B, C, D.value_or(at::Tensor()), z.value_or(at::Tensor()),
                            delta_bias.value_or(at::Tensor()), initial_state.value_or(at::Tensor()), chunk_states,
                            seq_idx.value_or(at::Tensor()), cu_seqlens.value_or(at::Tensor())});
    ctx->saved_data["delta_softplus"] = delta_softplus;
    ctx->saved_data["chunk_size"] = chunk_size;
    ctx->set_materialize_grads(false);
    return {out, last_state};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &u = saved[0], &D = saved[5], &z = saved[6], &delta_bias = saved[7], &initial = saved[8];
    const at::Tensor dout = grads[0].defined() ? grads[0] : at::zeros_like(u);
    // Under create_graph the internal op's autograd fallback must run: it marks the gradients so that
    // differentiating them raises an error naming selective_scan_bwd. Otherwise it would only box the
    // arguments and redispatch, host time between the forward's kernels and the backward's.
    std::optional<at::AutoDispatchBelowADInplaceOrView> below_autograd;
    if (!torch::autograd::GradMode::is_enabled()) below_autograd.emplace();
    auto [du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial] = selective_scan_bwd(
        dout, defined_or_none(grads[1]), u, saved[1], saved[2], saved[3], saved[4], defined_or_none(D),
        defined_or_none(z), defined_or_none(delta_bias), ctx->saved_data["delta_softplus"].toBool(),
        defined_or_none(initial), defined_or_none(saved[10]), saved[9], ctx->saved_data["chunk_size"].toInt(),
        at::globalContext().deterministicAlgorithms(), defined_or_none(saved[11]));
    const auto if_given = [](const at::Tensor& input, const at::Tensor& grad) {
      return input.defined() ? grad : at::Tensor();
    };
    return {du,
            ddelta,
            dA,
            dB,
            dC,
            if_given(D, dD),
            if_given(z, dz),
            if_given(delta_bias, ddelta_bias),
            at::Tensor(),  // delta_softplus
            if_given(initial, dinitial),
            at::Tensor(),   // seq_idx
            at::Tensor()};  // cu_seqlens
  }
};

// Below autograd (inference mode, no_grad, or tensors that need no grad): the forward alone, which stores no
// chunk states (as large as a 16-bit input for N = 16).
std::tuple<at::Tensor, at::Tensor> selective_scan_forward_only(const at::Tensor& u, const at::Tensor& delta,
                                                               const at::Tensor& A, const at::Tensor& B,
                                                               const at::Tensor& C, const OptTensor& D,
                                                               const OptTensor& z, const OptTensor& delta_bias,
                                                               bool delta_softplus, const OptTensor& initial_state,
                                                               const OptTensor& seq_idx,
                                                               const OptTensor& cu_seqlens) {
  const OptTensor ids = checked_seq_idx(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, cu_seqlens);
  auto [out, last_state, chunk_states] =
      selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, ids,
                         selective_scan_chunk_size(u.device().type()), cu_seqlens, /*save_states=*/false);
  return {out, last_state};
}

std::tuple<at::Tensor, at::Tensor> selective_scan_autograd(const at::Tensor& u, const at::Tensor& delta,
                                                           const at::Tensor& A, const at::Tensor& B,
                                                           const at::Tensor& C, const OptTensor& D, const OptTensor& z,
                                                           const OptTensor& delta_bias, bool delta_softplus,
                                                           const OptTensor& initial_state, const OptTensor& seq_idx,
                                                           const OptTensor& cu_seqlens) {
  // Forward-mode AD has no formula here: refuse dual tensors instead of returning outputs without tangents.
  const auto has_tangent = [](const at::Tensor& t) { return t._fw_grad(/*level=*/0).defined(); };
  MAMBA_CHECK(!any_input(has_tangent, u, delta, A, B, C, D, z, delta_bias, initial_state), "selective_scan",
              "forward-mode AD (dual tensors) is not supported; use reverse mode (backward / autograd.grad)");
  const auto requires_grad = [](const at::Tensor& t) { return t.requires_grad(); };
  if (!torch::autograd::GradMode::is_enabled() ||
      !any_input(requires_grad, u, delta, A, B, C, D, z, delta_bias, initial_state)) {
    // No graph to record (no_grad, or no input requires grad): the forward alone, without the Function's
    // node, saved tensors and output wrapping, and without the internal op's autograd fallback.
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return selective_scan_forward_only(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, seq_idx,
                                       cu_seqlens);
  }
  const OptTensor ids = checked_seq_idx(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, cu_seqlens);
  auto outs = SelectiveScanFunction::apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, ids,
                                           cu_seqlens);
  return {outs[0], outs[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(mamba_ext, Autograd, m) {
  m.impl("selective_scan", &selective_scan_autograd);
  m.impl("selective_scan_fwd", torch::autograd::autogradNotImplementedFallback());
  m.impl("selective_scan_bwd", torch::autograd::autogradNotImplementedFallback());
}

TORCH_LIBRARY_IMPL(mamba_ext, CompositeExplicitAutograd, m) {
  m.impl("selective_scan", &selective_scan_forward_only);
}

}  // namespace mamba_ext
