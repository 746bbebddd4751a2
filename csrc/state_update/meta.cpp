// Meta (shape-only) kernel of selective_state_update, for torch.compile's fake tensors and opcheck.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "state_update/args.h"

namespace mamba_ext {
namespace {

at::Tensor selective_state_update_meta(at::Tensor& state, const at::Tensor& x, const at::Tensor& dt,
                                       const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                       const OptTensor& D, const OptTensor& z, const OptTensor& dt_bias,
                                       bool /*dt_softplus*/, const OptTensor& state_batch_indices) {
  check_state_update_inputs("selective_state_update", state, x, dt, A, B, C, D, z, dt_bias, state_batch_indices);
  return at::empty_symint(x.sym_sizes(), x.options());
}

}  // namespace

TORCH_LIBRARY_IMPL(mamba_ext, Meta, m) { m.impl("selective_state_update", &selective_state_update_meta); }

}  // namespace mamba_ext
