#include "selective_scan/scan_args.h"

#include "common/checks.h"
#include "common/cu_seqlens.h"

namespace mamba_ext {
namespace {

// B or C: constant (dim, N) in the state dtype, or input-dependent (batch, N, seqlen) /
// (batch, groups, N, seqlen) in the input dtype. Returns the 2-D or 4-D view the kernels use.
at::Tensor check_B_or_C(const char* op, const char* name, const at::Tensor& t, const ScanInputs& in) {
  check_device(op, name, t, in.u);
  if (t.dim() == 2) {
    check_shape(op, name, t, {in.dim, in.dstate}, "(dim, N)");
    check_dtype(op, name, t, in.state_dtype, "a constant B/C is a parameter in the state dtype");
    return t.contiguous();
  }
  MAMBA_CHECK(t.dim() == 3 || t.dim() == 4, op, name,
              " must be (dim, N), (batch, N, seqlen) or (batch, groups, N, seqlen), got shape ", t.sizes());
  at::Tensor t4 = t.dim() == 3 ? t.unsqueeze(1) : t;
  const c10::SymInt groups = t4.sym_size(1);
  MAMBA_CHECK(groups >= 1 && in.dim % groups == 0, op, name, " has ", groups,
              " groups, which must be >= 1 and divide dim = ", in.dim);
  check_shape(op, name, t4, {in.batch, groups, in.dstate, in.seqlen}, "(batch, groups, N, seqlen)");
  check_dtype(op, name, t, in.u.scalar_type(), "an input-dependent B/C has the dtype of u");
  return time_contiguous(t4);
}

at::Tensor check_param(const char* op, const char* name, const at::Tensor& t, const ScanInputs& in,
                       c10::SymIntArrayRef shape, const char* layout) {
  check_device(op, name, t, in.u);
  check_shape(op, name, t, shape, layout);
  check_dtype(op, name, t, in.state_dtype, "parameters and states are kept in fp32 (fp64 for fp64 inputs)");
  return t.contiguous();
}

at::Tensor check_like_u(const char* op, const char* name, const at::Tensor& t, const ScanInputs& in) {
  check_device(op, name, t, in.u);
  check_shape(op, name, t, in.u.sym_sizes(), "(batch, dim, seqlen)");
  check_dtype(op, name, t, in.u.scalar_type(), "same as u");
  return time_contiguous(t);
}

}  // namespace

ScanInputs check_scan_inputs(const char* op, const at::Tensor& u, const at::Tensor& delta,
                             const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                             const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias,
                             const OptTensor& initial_state, const OptTensor& seq_idx,
                             const OptTensor& cu_seqlens) {
  ScanInputs in;
  check_rank(op, "u", u, 3);
  check_floating(op, "u", u);
  in.u = time_contiguous(u);
  in.batch = u.sym_size(0);
  in.dim = u.sym_size(1);
  in.seqlen = u.sym_size(2);
  in.state_dtype = u.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  check_rank(op, "A", A, 2);
  MAMBA_CHECK(A.sym_size(0) == in.dim, op, "A must have shape (dim, N) with dim = ", in.dim, ", got ",
              A.sym_sizes());
  in.dstate = A.sym_size(1);
  MAMBA_CHECK(in.dstate >= 1 && in.dstate <= kMaxDstate, op, "A has N = ", in.dstate,
              " states; N must be between 1 and ", kMaxDstate);
  in.A = check_param(op, "A", A, in, {in.dim, in.dstate}, "(dim, N)");
  in.delta = check_like_u(op, "delta", delta, in);
  in.B = check_B_or_C(op, "B", B, in);
  in.C = check_B_or_C(op, "C", C, in);
  in.is_variable_B = in.B.dim() == 4;
  in.is_variable_C = in.C.dim() == 4;
  if (in.is_variable_B && in.is_variable_C) {
    MAMBA_CHECK(in.B.sym_size(1) == in.C.sym_size(1), op, "B and C must have the same number of groups, got ",
                in.B.sym_size(1), " and ", in.C.sym_size(1));
  }
  in.n_groups = in.is_variable_B ? in.B.sym_size(1) : (in.is_variable_C ? in.C.sym_size(1) : c10::SymInt(1));
  if (D) in.D = check_param(op, "D", *D, in, {in.dim}, "(dim,)");
  if (delta_bias) in.delta_bias = check_param(op, "delta_bias", *delta_bias, in, {in.dim}, "(dim,)");
  if (z) in.z = check_like_u(op, "z", *z, in);
  in.state_rows = in.batch;
  if (cu_seqlens) {
    in.state_rows = check_cu_seqlens(op, *cu_seqlens, u, "u", in.batch, in.seqlen);
    in.cu_seqlens = cu_seqlens;
  }
  if (initial_state) {
    in.initial_state = check_param(op, "initial_state", *initial_state, in, {in.state_rows, in.dim, in.dstate},
                                   cu_seqlens ? "(num_seqs, dim, N)" : "(batch, dim, N)");
  }
  if (seq_idx) {
    check_device(op, "seq_idx", *seq_idx, in.u);
    check_shape(op, "seq_idx", *seq_idx, {in.batch, in.seqlen}, "(batch, seqlen)");
    check_dtype(op, "seq_idx", *seq_idx, at::kInt, "int32 sequence ids");
    in.seq_idx = seq_idx->contiguous();
  }
  return in;
}

void check_ids_with_cu_seqlens(const char* op, const OptTensor& seq_idx) {
  MAMBA_CHECK(seq_idx, op, "cu_seqlens needs seq_idx, the ids derived from it (selective_scan passes both)");
}

c10::SymInt scan_num_chunks(const char* op, const c10::SymInt& seqlen, int64_t chunk_size) {
  MAMBA_CHECK(chunk_size >= 1, op, "chunk_size must be >= 1, got ", chunk_size);
  return (seqlen + chunk_size - 1) / chunk_size;
}

SelectiveScanParams make_scan_params(const ScanInputs& in, bool delta_softplus, int64_t chunk_size) {
  SelectiveScanParams p;
  p.batch = in.u.size(0);
  p.dim = in.u.size(1);
  p.seqlen = in.u.size(2);
  p.dstate = in.A.size(1);
  p.n_groups = in.n_groups.expect_int();
  p.chunk_size = chunk_size;
  p.n_chunks = ceil_div(p.seqlen, chunk_size);
  p.is_variable_B = in.is_variable_B;
  p.is_variable_C = in.is_variable_C;
  p.delta_softplus = delta_softplus;
  p.u_batch_stride = in.u.stride(0);
  p.u_dim_stride = in.u.stride(1);
  p.delta_batch_stride = in.delta.stride(0);
  p.delta_dim_stride = in.delta.stride(1);
  if (in.is_variable_B) {
    p.B_batch_stride = in.B.stride(0);
    p.B_group_stride = in.B.stride(1);
    p.B_dstate_stride = in.B.stride(2);
  }
  if (in.is_variable_C) {
    p.C_batch_stride = in.C.stride(0);
    p.C_group_stride = in.C.stride(1);
    p.C_dstate_stride = in.C.stride(2);
  }
  if (in.z) {
    p.z_batch_stride = in.z->stride(0);
    p.z_dim_stride = in.z->stride(1);
    p.z_ptr = in.z->const_data_ptr();
  }
  p.u_ptr = in.u.const_data_ptr();
  p.delta_ptr = in.delta.const_data_ptr();
  p.A_ptr = in.A.const_data_ptr();
  p.B_ptr = in.B.const_data_ptr();
  p.C_ptr = in.C.const_data_ptr();
  p.D_ptr = in.D ? in.D->const_data_ptr() : nullptr;
  p.delta_bias_ptr = in.delta_bias ? in.delta_bias->const_data_ptr() : nullptr;
  p.initial_state_ptr = in.initial_state ? in.initial_state->const_data_ptr() : nullptr;
  p.seq_idx_ptr = in.seq_idx ? in.seq_idx->const_data_ptr<int32_t>() : nullptr;
  p.state_rows = in.state_rows.expect_int();
  p.per_sequence_states = in.cu_seqlens.has_value();
  return p;
}

void check_scan_grads(const char* op, const ScanInputs& in, const at::Tensor& dout,
                      const OptTensor& dlast_state, const at::Tensor& chunk_states, int64_t chunk_size) {
  check_like_u(op, "dout", dout, in);
  if (dlast_state) {
    check_param(op, "dlast_state", *dlast_state, in, {in.state_rows, in.dim, in.dstate},
                in.cu_seqlens ? "(num_seqs, dim, N)" : "(batch, dim, N)");
  }
  const c10::SymInt n_chunks = scan_num_chunks(op, in.seqlen, chunk_size);
  check_param(op, "chunk_states", chunk_states, in, {in.batch, in.dim, n_chunks, in.dstate},
              "(batch, dim, n_chunks, N)");
}

}  // namespace mamba_ext
