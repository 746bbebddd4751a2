// Everything a selective-state-update kernel (CPU or CUDA) needs, as plain data. No torch headers here, so
// the CUDA kernel header that includes it compiles with plain nvcc.
//
// One recurrent step of the selective scan, per (batch b, channel d, state n):
//   dt = dt[b,d] + dt_bias[d];  dt = softplus(dt) if dt_softplus    (softplus(v) = v for v > 20)
//   h[n] = exp(dt * A[d,n]) * h[n] + dt * B[b,g(d),n] * x[b,d]          (h: the state row, updated in place)
//   out[b,d] = (sum_n C[b,g(d),n] * h[n] + D[d] * x[b,d]) * silu(z[b,d])
// The state row is state[s] with s = state_batch_indices[b] (or b); a negative index marks a padding row:
// out is zero and no state is touched.
//
// Layouts (strides in elements):
//   x, dt, z, out            (batch, dim)             *_batch_stride, *_dim_stride
//   B, C                     (batch, groups, N)       *_batch_stride, *_group_stride, *_dstate_stride
//   state                    (n_states, dim, N)       state_batch_stride, state_dim_stride, unit N stride
//   A (dim, N); D, dt_bias (dim,): contiguous, state dtype (fp32; fp64 for fp64 x)
#pragma once

#include <cstdint>

namespace mamba_ext {

struct StateUpdateParams {
  int64_t batch = 0, dim = 0, dstate = 0, n_groups = 1, n_states = 0;
  bool dt_softplus = false;

  int64_t x_batch_stride = 0, x_dim_stride = 0;
  int64_t dt_batch_stride = 0, dt_dim_stride = 0;
  int64_t z_batch_stride = 0, z_dim_stride = 0;
  int64_t out_batch_stride = 0, out_dim_stride = 0;
  int64_t B_batch_stride = 0, B_group_stride = 0, B_dstate_stride = 0;
  int64_t C_batch_stride = 0, C_group_stride = 0, C_dstate_stride = 0;
  int64_t state_batch_stride = 0, state_dim_stride = 0;

  const void* x_ptr = nullptr;
  const void* dt_ptr = nullptr;
  const void* z_ptr = nullptr;  // nullptr: no gate
  const void* B_ptr = nullptr;
  const void* C_ptr = nullptr;
  const void* A_ptr = nullptr;
  const void* D_ptr = nullptr;        // nullptr: no skip term
  const void* dt_bias_ptr = nullptr;  // nullptr: no bias
  const int32_t* state_indices_ptr = nullptr;
  void* state_ptr = nullptr;
  void* out_ptr = nullptr;
};

}  // namespace mamba_ext
