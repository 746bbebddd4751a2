// selective_state_update updates its state in place and is not differentiable: under autograd it raises a
// clear error if an input requires grad (autogradNotImplementedFallback), and the ADInplaceOrView kernel
// bumps the version counter of the mutated state so autograd notices stale saved tensors.
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

namespace mamba_ext {

TORCH_LIBRARY_IMPL(mamba_ext, Autograd, m) {
  m.impl("selective_state_update", torch::autograd::autogradNotImplementedFallback());
}

TORCH_LIBRARY_IMPL(mamba_ext, ADInplaceOrView, m) {
  m.impl("selective_state_update", torch::autograd::autogradNotImplementedInplaceOrViewFallback());
}

}  // namespace mamba_ext
