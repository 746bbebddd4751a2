// The one TORCH_LIBRARY block holding every mamba_ext schema, and the C++ API that calls through the
// dispatcher. Backend files register their kernels with TORCH_LIBRARY_IMPL; nothing here knows a backend.
#include "ops.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace mamba_ext {

TORCH_LIBRARY(mamba_ext, m) {
  m.def(
      "selective_scan(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D=None, Tensor? z=None, "
      "Tensor? delta_bias=None, bool delta_softplus=False, Tensor? initial_state=None) "
      "-> (Tensor out, Tensor last_state)");
  m.def(
      "selective_scan_fwd(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, "
      "Tensor? delta_bias, bool delta_softplus, Tensor? initial_state, int chunk_size) "
      "-> (Tensor out, Tensor last_state, Tensor chunk_states)");
  m.def(
      "selective_scan_bwd(Tensor dout, Tensor? dlast_state, Tensor u, Tensor delta, Tensor A, Tensor B, "
      "Tensor C, Tensor? D, Tensor? z, Tensor? delta_bias, bool delta_softplus, Tensor? initial_state, "
      "Tensor chunk_states, int chunk_size, bool deterministic) -> (Tensor du, Tensor ddelta, Tensor dA, "
      "Tensor dB, Tensor dC, Tensor dD, Tensor dz, Tensor ddelta_bias, Tensor dinitial_state)");
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
                                                  const OptTensor& initial_state) {
  static auto op = find_op<decltype(selective_scan)>("mamba_ext::selective_scan");
  return op.call(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> selective_scan_fwd(
    const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
    const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias, bool delta_softplus,
    const OptTensor& initial_state, int64_t chunk_size) {
  static auto op = find_op<decltype(selective_scan_fwd)>("mamba_ext::selective_scan_fwd");
  return op.call(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, chunk_size);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
selective_scan_bwd(const at::Tensor& dout, const OptTensor& dlast_state, const at::Tensor& u,
                   const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                   const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias, bool delta_softplus,
                   const OptTensor& initial_state, const at::Tensor& chunk_states, int64_t chunk_size,
                   bool deterministic) {
  static auto op = find_op<decltype(selective_scan_bwd)>("mamba_ext::selective_scan_bwd");
  return op.call(dout, dlast_state, u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
                 chunk_states, chunk_size, deterministic);
}

}  // namespace mamba_ext
