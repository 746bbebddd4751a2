// CUDA host wrapper of selective_state_update (kernel.cuh). Instantiations: 3 dtypes.
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>

#include "common/cuda_dispatch.h"
#include "state_update/args.h"
#include "state_update/kernel.cuh"

namespace mamba_ext {
namespace {

at::Tensor selective_state_update_cuda(at::Tensor& state, const at::Tensor& x, const at::Tensor& dt,
                                       const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                       const OptTensor& D, const OptTensor& z, const OptTensor& dt_bias,
                                       bool dt_softplus, const OptTensor& state_batch_indices) {
  const char* op = "selective_state_update";
  const StateUpdateInputs in =
      check_state_update_inputs(op, state, x, dt, A, B, C, D, z, dt_bias, state_batch_indices);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty(x.sizes(), x.options());
  const StateUpdateParams p = make_state_update_params(in, dt_softplus, out);
  const int64_t rows = p.batch * p.dim;
  if (rows == 0) return out;
  // float4 moves of the state and A: N a multiple of 4 and every row start 16-byte aligned.
  const bool vec = p.dstate % 4 == 0 && reinterpret_cast<uintptr_t>(p.state_ptr) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(p.A_ptr) % 16 == 0 && p.state_batch_stride % 4 == 0 &&
                   p.state_dim_stride % 4 == 0;
  MAMBA_CHECK(p.batch <= 65535 && p.dim <= std::numeric_limits<int32_t>::max(), op, "x of shape (", p.batch, ", ",
              p.dim, ") is too large for the CUDA grid (batch at most 65535)");
  const dim3 grid((p.dim + cuda::kStateUpdateRowsPerBlock - 1) / cuda::kStateUpdateRowsPerBlock, p.batch);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  cuda::dispatch_float_type(op, x.scalar_type(), [&](auto* type_tag) {
    using input_t = std::remove_pointer_t<decltype(type_tag)>;
    cuda::selective_state_update_kernel<input_t><<<grid, cuda::kStateUpdateThreads, 0, stream>>>(p, vec);
  });
  cuda::check_launch(op, cudaGetLastError());
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mamba_ext, CUDA, m) { m.impl("selective_state_update", &selective_state_update_cuda); }

}  // namespace mamba_ext
