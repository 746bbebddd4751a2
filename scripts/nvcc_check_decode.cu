// Compile-check of the torch-free CUDA kernel headers of causal_conv1d (with its weight-gradient sum),
// causal_conv1d_update and selective_state_update with plain nvcc: instantiates every kernel the host wrappers launch.
// nvcc -std=c++17 -O3 --use_fast_math -Icsrc -arch=sm_90 -c scripts/nvcc_check_decode.cu -o /dev/null
#include "causal_conv1d/kernel.cuh"
#include "causal_conv1d/update_kernel.cuh"
#include "causal_conv1d/weight_grad_kernel.cuh"
#include "state_update/kernel.cuh"

namespace mamba_ext::cuda {

template <typename T>
void instantiate_all() {
  auto fwd2 = &causal_conv1d_fwd_kernel<T, 2>;
  auto fwd3 = &causal_conv1d_fwd_kernel<T, 3>;
  auto fwd4 = &causal_conv1d_fwd_kernel<T, 4>;
  auto bwd2 = &causal_conv1d_bwd_kernel<T, 2, false>;
  auto bwd3 = &causal_conv1d_bwd_kernel<T, 3, false>;
  auto bwd4 = &causal_conv1d_bwd_kernel<T, 4, false>;
  auto bwd2m = &causal_conv1d_bwd_kernel<T, 2, true>;
  auto bwd3m = &causal_conv1d_bwd_kernel<T, 3, true>;
  auto bwd4m = &causal_conv1d_bwd_kernel<T, 4, true>;
  auto upd = &causal_conv1d_update_kernel<T>;
  auto wgrad = &conv_weight_grad_kernel<T>;
  auto ssu = &selective_state_update_kernel<T, true>;
  auto ssu_generic = &selective_state_update_kernel<T, false>;
  (void)fwd2, (void)fwd3, (void)fwd4, (void)bwd2, (void)bwd3, (void)bwd4, (void)bwd2m, (void)bwd3m, (void)bwd4m;
  (void)upd, (void)wgrad, (void)ssu, (void)ssu_generic;
}

template void instantiate_all<float>();
template void instantiate_all<__half>();
template void instantiate_all<__nv_bfloat16>();

}  // namespace mamba_ext::cuda

int main() { return 0; }
