// CUDA host wrapper of causal_conv1d_update (update_kernel.cuh). Instantiations: 3 dtypes.
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "causal_conv1d/args.h"
#include "causal_conv1d/cuda_weights.h"
#include "causal_conv1d/update_kernel.cuh"
#include "common/cuda_dispatch.h"

namespace mamba_ext {
namespace {

at::Tensor causal_conv1d_update_cuda(const at::Tensor& x, at::Tensor& conv_state, const at::Tensor& weight,
                                     const OptTensor& bias, std::optional<c10::string_view> activation,
                                     const OptTensor& conv_state_indices) {
  const char* op = "causal_conv1d_update";
  const bool silu = parse_activation(op, activation);
  const ConvUpdateInputs in = check_conv_update_inputs(op, x, conv_state, weight, bias, conv_state_indices);
  const c10::cuda::CUDAGuard guard(x.device());
  const KernelWeights kw = kernel_weights(weight, bias, x.scalar_type());
  at::Tensor out = at::empty(x.sizes(), x.options());
  const at::Tensor out3 = x.dim() == 2 ? out.unsqueeze(-1) : out;
  CausalConv1dUpdateParams p = make_conv_update_params(in, silu, out3, kw.weight, kw.bias);
  p.weight_in_input_dtype = kw.in_input_dtype;
  const int64_t rows = p.batch * p.dim;
  if (rows == 0) return out;
  const int64_t blocks = (rows + cuda::kConvUpdateThreads - 1) / cuda::kConvUpdateThreads;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  cuda::dispatch_float_type(op, x.scalar_type(), [&](auto* type_tag) {
    using input_t = std::remove_pointer_t<decltype(type_tag)>;
    cuda::causal_conv1d_update_kernel<input_t><<<blocks, cuda::kConvUpdateThreads, 0, stream>>>(p, conv_state.size(0));
  });
  cuda::check_launch(op, cudaGetLastError());
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mamba_ext, CUDA, m) { m.impl("causal_conv1d_update", &causal_conv1d_update_cuda); }

}  // namespace mamba_ext
