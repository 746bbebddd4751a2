// The one TORCH_LIBRARY block holding every mamba_ext schema, and the C++ API that calls through the
// dispatcher. Backend files register their kernels with TORCH_LIBRARY_IMPL; nothing here knows a backend.
#include "ops.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace mamba_ext {

TORCH_LIBRARY(mamba_ext, m) {
  m.def(
      "selective_scan(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D=None, Tensor? z=None, "
      "Tensor? delta_bias=None, bool delta_softplus=False, Tensor? initial_state=None, Tensor? seq_idx=None, "
      "Tensor? cu_seqlens=None) -> (Tensor out, Tensor last_state)");
  m.def(
      "selective_scan_fwd(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, "
      "Tensor? delta_bias, bool delta_softplus, Tensor? initial_state, Tensor? seq_idx, int chunk_size, "
      "Tensor? cu_seqlens=None, bool save_states=True) -> (Tensor out, Tensor last_state, Tensor chunk_states)");
  m.def(
      "selective_scan_bwd(Tensor dout, Tensor? dlast_state, Tensor u, Tensor delta, Tensor A, Tensor B, "
      "Tensor C, Tensor? D, Tensor? z, Tensor? delta_bias, bool delta_softplus, Tensor? initial_state, "
      "Tensor? seq_idx, Tensor chunk_states, int chunk_size, bool deterministic, Tensor? cu_seqlens=None) "
      "-> (Tensor du, Tensor ddelta, Tensor dA, Tensor dB, Tensor dC, Tensor dD, Tensor dz, Tensor ddelta_bias, "
      "Tensor dinitial_state)");
  m.def(
      "causal_conv1d(Tensor x, Tensor weight, Tensor? bias=None, str? activation=None, "
      "Tensor? initial_states=None, Tensor? seq_idx=None, Tensor? cu_seqlens=None) "
      "-> (Tensor out, Tensor final_states)");
  m.def(
      "causal_conv1d_fwd(Tensor x, Tensor weight, Tensor? bias, Tensor? initial_states, Tensor? seq_idx, "
      "bool silu, Tensor? cu_seqlens=None) -> (Tensor out, Tensor final_states)");
  m.def(
      "causal_conv1d_bwd(Tensor dout, Tensor? dfinal_states, Tensor x, Tensor weight, Tensor? bias, "
      "Tensor? initial_states, Tensor? seq_idx, bool silu, Tensor? cu_seqlens=None) "
      "-> (Tensor dx, Tensor dweight, Tensor dbias, Tensor dinitial_states)");
  m.def(
      "causal_conv1d_update(Tensor x, Tensor(a!) conv_state, Tensor weight, Tensor? bias=None, "
      "str? activation=None, Tensor? conv_state_indices=None) -> Tensor");
  m.def(
      "selective_state_update(Tensor(a!) state, Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C, "
      "Tensor? D=None, Tensor? z=None, Tensor? dt_bias=None, bool dt_softplus=False, "
      "Tensor? state_batch_indices=None) -> Tensor");
}

namespace {
template <typename Fn>
c10::TypedOperatorHandle<Fn> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Fn>();
}
}  // namespace

std::tuple<at::Tensor, at::Tensor> selective_scan(const at::Tensor& u, const at::Tensor& delta,
                                                  const at::Tensor& A, const at::Tensor& B,
                                                  const at::Tensor& C, const OptTensor& D, const OptTensor& z,
                                                  const OptTensor& delta_bias, bool delta_softplus,
                                                  const OptTensor& initial_state, const OptTensor& seq_idx,
                                                  const OptTensor& cu_seqlens) {
  static auto op = find_op<decltype(selective_scan)>("mamba_ext::selective_scan");
  return op.call(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, seq_idx, cu_seqlens);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> selective_scan_fwd(
    const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
    const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias, bool delta_softplus,
    const OptTensor& initial_state, const OptTensor& seq_idx, int64_t chunk_size, const OptTensor& cu_seqlens,
    bool save_states) {
  static auto op = find_op<decltype(selective_scan_fwd)>("mamba_ext::selective_scan_fwd");
  return op.call(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, seq_idx, chunk_size,
                 cu_seqlens, save_states);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
selective_scan_bwd(const at::Tensor& dout, const OptTensor& dlast_state, const at::Tensor& u,
                   const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                   const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias, bool delta_softplus,
                   const OptTensor& initial_state, const OptTensor& seq_idx, const at::Tensor& chunk_states,
                   int64_t chunk_size, bool deterministic, const OptTensor& cu_seqlens) {
  static auto op = find_op<decltype(selective_scan_bwd)>("mamba_ext::selective_scan_bwd");
  return op.call(dout, dlast_state, u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, seq_idx,
                 chunk_states, chunk_size, deterministic, cu_seqlens);
}

std::tuple<at::Tensor, at::Tensor> causal_conv1d(const at::Tensor& x, const at::Tensor& weight, const OptTensor& bias,
                                                 std::optional<c10::string_view> activation,
                                                 const OptTensor& initial_states, const OptTensor& seq_idx,
                                                 const OptTensor& cu_seqlens) {
  static auto op = find_op<decltype(causal_conv1d)>("mamba_ext::causal_conv1d");
  return op.call(x, weight, bias, activation, initial_states, seq_idx, cu_seqlens);
}

std::tuple<at::Tensor, at::Tensor> causal_conv1d_fwd(const at::Tensor& x, const at::Tensor& weight,
                                                     const OptTensor& bias, const OptTensor& initial_states,
                                                     const OptTensor& seq_idx, bool silu,
                                                     const OptTensor& cu_seqlens) {
  static auto op = find_op<decltype(causal_conv1d_fwd)>("mamba_ext::causal_conv1d_fwd");
  return op.call(x, weight, bias, initial_states, seq_idx, silu, cu_seqlens);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> causal_conv1d_bwd(
    const at::Tensor& dout, const OptTensor& dfinal_states, const at::Tensor& x, const at::Tensor& weight,
    const OptTensor& bias, const OptTensor& initial_states, const OptTensor& seq_idx, bool silu,
    const OptTensor& cu_seqlens) {
  static auto op = find_op<decltype(causal_conv1d_bwd)>("mamba_ext::causal_conv1d_bwd");
  return op.call(dout, dfinal_states, x, weight, bias, initial_states, seq_idx, silu, cu_seqlens);
}

at::Tensor causal_conv1d_update(const at::Tensor& x, at::Tensor& conv_state, const at::Tensor& weight,
                                const OptTensor& bias, std::optional<c10::string_view> activation,
                                const OptTensor& conv_state_indices) {
  static auto op = find_op<decltype(causal_conv1d_update)>("mamba_ext::causal_conv1d_update");
  return op.call(x, conv_state, weight, bias, activation, conv_state_indices);
}

at::Tensor selective_state_update(at::Tensor& state, const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                                  const at::Tensor& B, const at::Tensor& C, const OptTensor& D, const OptTensor& z,
                                  const OptTensor& dt_bias, bool dt_softplus, const OptTensor& state_batch_indices) {
  static auto op = find_op<decltype(selective_state_update)>("mamba_ext::selective_state_update");
  return op.call(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, state_batch_indices);
}

}  // namespace mamba_ext
