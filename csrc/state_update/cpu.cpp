// CPU selective_state_update: one recurrent step per (batch, channel) row, the state row updated in place
// (see params.h for the math). Parallel over rows. Instantiations: 4 input dtypes.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>

#include "common/state_indices.h"
#include "state_update/args.h"

namespace mamba_ext {
namespace {

template <typename input_t, typename acc_t>
void state_update_kernel(const StateUpdateParams& p) {
  const int64_t N = p.dstate, channels_per_group = p.dim / p.n_groups;
  at::parallel_for(0, p.batch * p.dim, std::max<int64_t>(1, 4096 / N), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / p.dim, d = row % p.dim, g = d / channels_per_group;
      auto& out = static_cast<input_t*>(p.out_ptr)[b * p.out_batch_stride + d * p.out_dim_stride];
      const int64_t s = p.state_indices_ptr ? p.state_indices_ptr[b] : b;
      if (s < 0) {  // padding row
        out = input_t(0);
        continue;
      }
      const acc_t x = static_cast<acc_t>(static_cast<const input_t*>(p.x_ptr)[b * p.x_batch_stride + d * p.x_dim_stride]);
      acc_t dt = static_cast<acc_t>(static_cast<const input_t*>(p.dt_ptr)[b * p.dt_batch_stride + d * p.dt_dim_stride]);
      if (p.dt_bias_ptr) dt += static_cast<const acc_t*>(p.dt_bias_ptr)[d];
      if (p.dt_softplus) dt = dt <= acc_t(20) ? std::log1p(std::exp(dt)) : dt;
      const acc_t* A = static_cast<const acc_t*>(p.A_ptr) + d * N;
      const auto* B = static_cast<const input_t*>(p.B_ptr) + b * p.B_batch_stride + g * p.B_group_stride;
      const auto* C = static_cast<const input_t*>(p.C_ptr) + b * p.C_batch_stride + g * p.C_group_stride;
      acc_t* h = static_cast<acc_t*>(p.state_ptr) + s * p.state_batch_stride + d * p.state_dim_stride;
      const acc_t dtx = dt * x;
      acc_t y = 0;
      for (int64_t n = 0; n < N; ++n) {
        h[n] = std::exp(dt * A[n]) * h[n] + dtx * static_cast<acc_t>(B[n * p.B_dstate_stride]);
        y += static_cast<acc_t>(C[n * p.C_dstate_stride]) * h[n];
      }
      if (p.D_ptr) y += static_cast<const acc_t*>(p.D_ptr)[d] * x;
      if (p.z_ptr) {
        const acc_t z =
            static_cast<acc_t>(static_cast<const input_t*>(p.z_ptr)[b * p.z_batch_stride + d * p.z_dim_stride]);
        y *= z / (acc_t(1) + std::exp(-z));
      }
      out = static_cast<input_t>(y);
    }
  });
}

at::Tensor selective_state_update_cpu(at::Tensor& state, const at::Tensor& x, const at::Tensor& dt,
                                      const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                      const OptTensor& D, const OptTensor& z, const OptTensor& dt_bias,
                                      bool dt_softplus, const OptTensor& state_batch_indices) {
  const char* op = "selective_state_update";
  const StateUpdateInputs in = check_state_update_inputs(op, state, x, dt, A, B, C, D, z, dt_bias, state_batch_indices);
  if (in.state_batch_indices) {
    check_state_indices_values(op, "state_batch_indices", *in.state_batch_indices, state.size(0));
  }
  at::Tensor out = at::empty(x.sizes(), x.options());
  const StateUpdateParams p = make_state_update_params(in, dt_softplus, out);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "selective_state_update_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    state_update_kernel<scalar_t, acc_t>(p);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mamba_ext, CPU, m) { m.impl("selective_state_update", &selective_state_update_cpu); }

}  // namespace mamba_ext
