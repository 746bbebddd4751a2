// CUDA host wrapper of selective_state_update (kernel.cuh). Instantiations: 3 dtypes x 2 paths.
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

bool aligned(const void* ptr, int64_t bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; }

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
  // Whole groups of 4 states as single loads and stores: N a multiple of 16 (one or more whole passes),
  // state rows and A 16-byte aligned, B and C with unit N stride and rows aligned to 4 elements.
  const int64_t quad_bytes = 4 * static_cast<int64_t>(x.element_size());
  const bool vec = p.dstate % 16 == 0 && aligned(p.state_ptr, 16) && aligned(p.A_ptr, 16) &&
                   p.state_batch_stride % 4 == 0 && p.state_dim_stride % 4 == 0 && p.B_dstate_stride == 1 &&
                   p.C_dstate_stride == 1 && aligned(p.B_ptr, quad_bytes) && aligned(p.C_ptr, quad_bytes) &&
                   p.B_batch_stride % 4 == 0 && p.B_group_stride % 4 == 0 && p.C_batch_stride % 4 == 0 &&
                   p.C_group_stride % 4 == 0;
  MAMBA_CHECK(p.batch <= 65535 && p.dim <= std::numeric_limits<int32_t>::max(), op, "x of shape (", p.batch, ", ",
              p.dim, ") is too large for the CUDA grid (batch at most 65535)");
  const dim3 grid((p.dim + cuda::kStateUpdateRowsPerBlock - 1) / cuda::kStateUpdateRowsPerBlock, p.batch);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  cuda::dispatch_float_type(op, x.scalar_type(), [&](auto* type_tag) {
    using input_t = std::remove_pointer_t<decltype(type_tag)>;
    if (vec) {
      cuda::selective_state_update_kernel<input_t, true><<<grid, cuda::kStateUpdateThreads, 0, stream>>>(p);
    } else {
      cuda::selective_state_update_kernel<input_t, false><<<grid, cuda::kStateUpdateThreads, 0, stream>>>(p);
    }
  });
  cuda::check_launch(op, cudaGetLastError());
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mamba_ext, CUDA, m) { m.impl("selective_state_update", &selective_state_update_cuda); }

}  // namespace mamba_ext
