#include "state_update/args.h"

#include "common/checks.h"
#include "common/state_indices.h"

namespace mamba_ext {
namespace {

at::Tensor check_like_x(const char* op, const char* name, const at::Tensor& t, const StateUpdateInputs& in) {
  check_device(op, name, t, in.x, "x");
  check_shape(op, name, t, in.x.sym_sizes(), "(batch, dim)");
  check_dtype(op, name, t, in.x.scalar_type(), "same as x");
  return t;
}

at::Tensor check_param(const char* op, const char* name, const at::Tensor& t, const StateUpdateInputs& in,
                       c10::SymIntArrayRef shape, const char* layout) {
  check_device(op, name, t, in.x, "x");
  check_shape(op, name, t, shape, layout);
  check_dtype(op, name, t, in.state_dtype, "parameters and states are kept in fp32 (fp64 for fp64 x)");
  return t.contiguous();
}

// B or C: (batch, N) or (batch, groups, N) in x's dtype; returns the 3-D view.
at::Tensor check_B_or_C(const char* op, const char* name, const at::Tensor& t, const StateUpdateInputs& in) {
  check_device(op, name, t, in.x, "x");
  MAMBA_CHECK(t.dim() == 2 || t.dim() == 3, op, name, " must be (batch, N) or (batch, groups, N), got shape ",
              t.sym_sizes());
  at::Tensor t3 = t.dim() == 2 ? t.unsqueeze(1) : t;
  const c10::SymInt groups = t3.sym_size(1);
  MAMBA_CHECK(groups >= 1 && in.dim % groups == 0, op, name, " has ", groups,
              " groups, which must be >= 1 and divide dim = ", in.dim);
  check_shape(op, name, t3, {in.batch, groups, in.dstate}, "(batch, groups, N)");
  check_dtype(op, name, t, in.x.scalar_type(), "same as x");
  return t3;
}

}  // namespace

StateUpdateInputs check_state_update_inputs(const char* op, const at::Tensor& state, const at::Tensor& x,
                                            const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                                            const at::Tensor& C, const OptTensor& D, const OptTensor& z,
                                            const OptTensor& dt_bias, const OptTensor& state_batch_indices) {
  StateUpdateInputs in;
  check_rank(op, "x", x, 2);
  check_floating(op, "x", x);
  MAMBA_CHECK(!(x.is_cuda() && x.scalar_type() == at::kDouble), op,
              "x is float64, which the CUDA kernels do not support (use float32, float16 or bfloat16)");
  in.x = x;
  in.batch = x.sym_size(0);
  in.dim = x.sym_size(1);
  in.state_dtype = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  check_device(op, "A", A, x, "x");
  check_rank(op, "A", A, 2);
  MAMBA_CHECK(A.sym_size(0) == in.dim, op, "A must have shape (dim, N) with dim = ", in.dim, ", got ",
              A.sym_sizes());
  in.dstate = A.sym_size(1);
  MAMBA_CHECK(in.dstate >= 1, op, "A must have at least one state (N >= 1), got shape ", A.sym_sizes());
  in.A = check_param(op, "A", A, in, {in.dim, in.dstate}, "(dim, N)");

  check_device(op, "state", state, x, "x");
  check_rank(op, "state", state, 3);
  check_dtype(op, "state", state, in.state_dtype, "the state is kept in fp32 (fp64 for fp64 x)");
  MAMBA_CHECK(state.sym_size(1) == in.dim && state.sym_size(2) == in.dstate, op,
              "state must have shape (batch or n_states, dim, N) = (.., ", in.dim, ", ", in.dstate, "), got ",
              state.sym_sizes());
  // Updated in place, so it cannot be copied to a contiguous layout: the kernels need unit N stride.
  MAMBA_CHECK(state.sym_size(2) <= 1 || state.sym_stride(2) == 1, op,
              "state must be contiguous along N (stride 1 in its last dimension), got strides ",
              state.sym_strides());
  if (state_batch_indices) {
    in.state_batch_indices = check_state_indices(op, "state_batch_indices", *state_batch_indices, in.batch, x, "x");
  } else {
    MAMBA_CHECK(state.sym_size(0) == in.batch, op, "state has ", state.sym_size(0), " rows but x has batch ",
                in.batch, "; pass state_batch_indices to pick rows of a larger pool");
  }
  in.state = state;
  in.dt = check_like_x(op, "dt", dt, in);
  in.B = check_B_or_C(op, "B", B, in);
  in.C = check_B_or_C(op, "C", C, in);
  MAMBA_CHECK(in.B.sym_size(1) == in.C.sym_size(1), op, "B and C must have the same number of groups, got ",
              in.B.sym_size(1), " and ", in.C.sym_size(1));
  in.n_groups = in.B.sym_size(1);
  if (z) in.z = check_like_x(op, "z", *z, in);
  if (D) in.D = check_param(op, "D", *D, in, {in.dim}, "(dim,)");
  if (dt_bias) in.dt_bias = check_param(op, "dt_bias", *dt_bias, in, {in.dim}, "(dim,)");
  return in;
}

StateUpdateParams make_state_update_params(const StateUpdateInputs& in, bool dt_softplus, const at::Tensor& out) {
  StateUpdateParams p;
  p.batch = in.x.size(0);
  p.dim = in.x.size(1);
  p.dstate = in.A.size(1);
  p.n_groups = in.B.size(1);
  p.n_states = in.state.size(0);
  p.dt_softplus = dt_softplus;
  p.x_batch_stride = in.x.stride(0);
  p.x_dim_stride = in.x.stride(1);
  p.dt_batch_stride = in.dt.stride(0);
  p.dt_dim_stride = in.dt.stride(1);
  if (in.z) {
    p.z_batch_stride = in.z->stride(0);
    p.z_dim_stride = in.z->stride(1);
    p.z_ptr = in.z->const_data_ptr();
  }
  p.out_batch_stride = out.stride(0);
  p.out_dim_stride = out.stride(1);
  p.B_batch_stride = in.B.stride(0);
  p.B_group_stride = in.B.stride(1);
  p.B_dstate_stride = in.B.stride(2);
  p.C_batch_stride = in.C.stride(0);
  p.C_group_stride = in.C.stride(1);
  p.C_dstate_stride = in.C.stride(2);
  p.state_batch_stride = in.state.stride(0);
  p.state_dim_stride = in.state.stride(1);
  p.x_ptr = in.x.const_data_ptr();
  p.dt_ptr = in.dt.const_data_ptr();
  p.B_ptr = in.B.const_data_ptr();
  p.C_ptr = in.C.const_data_ptr();
  p.A_ptr = in.A.const_data_ptr();
  p.D_ptr = in.D ? in.D->const_data_ptr() : nullptr;
  p.dt_bias_ptr = in.dt_bias ? in.dt_bias->const_data_ptr() : nullptr;
  p.state_indices_ptr = in.state_batch_indices ? in.state_batch_indices->const_data_ptr<int32_t>() : nullptr;
  p.state_ptr = in.state.data_ptr();
  p.out_ptr = out.data_ptr();
  return p;
}

}  // namespace mamba_ext
