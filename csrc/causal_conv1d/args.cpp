#include "causal_conv1d/args.h"

#include "common/checks.h"
#include "common/cu_seqlens.h"
#include "common/state_indices.h"

namespace mamba_ext {
namespace {

// weight (dim, width): any floating dtype (the kernels accumulate in fp32, fp64 for fp64 x).
void check_weight(const char* op, const at::Tensor& weight, const at::Tensor& x, const c10::SymInt& dim,
                  c10::SymInt* width) {
  check_device(op, "weight", weight, x, "x");
  check_rank(op, "weight", weight, 2);
  check_floating(op, "weight", weight);
  *width = weight.sym_size(1);
  check_shape(op, "weight", weight, {dim, *width}, "(dim, width)");
}

// cuda_limit: the convolution's CUDA kernels are instantiated per width (kMaxWidthCuda); the decode update
// loops over any width on both devices.
void check_width(const char* op, const c10::SymInt& width, const at::Tensor& x, int64_t cuda_limit) {
  const int64_t limit = x.is_cuda() ? cuda_limit : kMaxWidthCpu;
  MAMBA_CHECK(width >= 2 && width <= limit, op, "weight has width ", width, "; the width must be between 2 and ",
              limit, " on ", x.device().type());
}

OptTensor check_bias(const char* op, const OptTensor& bias, const at::Tensor& x, const at::Tensor& weight,
                     const c10::SymInt& dim) {
  if (!bias) return std::nullopt;
  check_device(op, "bias", *bias, x, "x");
  check_shape(op, "bias", *bias, {dim}, "(dim,)");
  check_dtype(op, "bias", *bias, weight.scalar_type(), "same as weight");
  return bias;
}

void check_x_dtype(const char* op, const at::Tensor& x) {
  check_floating(op, "x", x);
  MAMBA_CHECK(!(x.is_cuda() && x.scalar_type() == at::kDouble), op,
              "x is float64, which the CUDA kernels do not support (use float32, float16 or bfloat16)");
}

}  // namespace

bool parse_activation(const char* op, const std::optional<c10::string_view>& activation) {
  if (!activation) return false;
  MAMBA_CHECK(*activation == "silu" || *activation == "swish", op,
              "activation must be None, \"silu\" or \"swish\", got \"", std::string(*activation), "\"");
  return true;
}

ConvInputs check_conv_inputs(const char* op, const at::Tensor& x, const at::Tensor& weight, const OptTensor& bias,
                             const OptTensor& initial_states, const OptTensor& seq_idx,
                             const OptTensor& cu_seqlens) {
  ConvInputs in;
  check_rank(op, "x", x, 3);
  check_x_dtype(op, x);
  in.x = time_contiguous(x);
  in.batch = x.sym_size(0);
  in.dim = x.sym_size(1);
  in.seqlen = x.sym_size(2);
  in.acc_dtype = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  check_weight(op, weight, x, in.dim, &in.width);
  check_width(op, in.width, x, kMaxWidthCuda);
  in.weight = weight;
  in.bias = check_bias(op, bias, x, weight, in.dim);
  in.state_rows = in.batch;
  if (cu_seqlens) {
    in.state_rows = check_cu_seqlens(op, *cu_seqlens, x, "x", in.batch, in.seqlen);
    in.cu_seqlens = cu_seqlens;
  }
  const char* state_layout = cu_seqlens ? "(num_seqs, dim, width - 1)" : "(batch, dim, width - 1)";
  if (initial_states) {
    check_device(op, "initial_states", *initial_states, x, "x");
    check_shape(op, "initial_states", *initial_states, {in.state_rows, in.dim, in.width - 1}, state_layout);
    check_dtype(op, "initial_states", *initial_states, x.scalar_type(), "same as x");
    in.initial_states = initial_states->contiguous();
  }
  if (seq_idx) {
    check_device(op, "seq_idx", *seq_idx, x, "x");
    check_shape(op, "seq_idx", *seq_idx, {in.batch, in.seqlen}, "(batch, seqlen)");
    check_dtype(op, "seq_idx", *seq_idx, at::kInt, "int32 sequence ids");
    in.seq_idx = seq_idx->contiguous();
  }
  return in;
}

void check_conv_grads(const char* op, const ConvInputs& in, const at::Tensor& dout, const OptTensor& dfinal_states) {
  check_device(op, "dout", dout, in.x, "x");
  check_shape(op, "dout", dout, in.x.sym_sizes(), "(batch, dim, seqlen)");
  check_dtype(op, "dout", dout, in.x.scalar_type(), "same as x");
  if (dfinal_states) {
    check_device(op, "dfinal_states", *dfinal_states, in.x, "x");
    check_shape(op, "dfinal_states", *dfinal_states, {in.state_rows, in.dim, in.width - 1},
                in.cu_seqlens ? "(num_seqs, dim, width - 1)" : "(batch, dim, width - 1)");
    check_dtype(op, "dfinal_states", *dfinal_states, in.x.scalar_type(), "same as x");
  }
}

CausalConv1dParams make_conv_params(const ConvInputs& in, bool silu, const at::Tensor& weight_acc,
                                    const OptTensor& bias_acc) {
  CausalConv1dParams p;
  p.batch = in.x.size(0);
  p.dim = in.x.size(1);
  p.seqlen = in.x.size(2);
  p.width = in.weight.size(1);
  p.silu = silu;
  p.x_batch_stride = in.x.stride(0);
  p.x_dim_stride = in.x.stride(1);
  p.x_ptr = in.x.const_data_ptr();
  p.weight_ptr = weight_acc.const_data_ptr();
  p.bias_ptr = bias_acc ? bias_acc->const_data_ptr() : nullptr;
  p.initial_states_ptr = in.initial_states ? in.initial_states->const_data_ptr() : nullptr;
  p.seq_idx_ptr = in.seq_idx ? in.seq_idx->const_data_ptr<int32_t>() : nullptr;
  p.state_rows = in.state_rows.expect_int();
  p.per_sequence_states = in.cu_seqlens.has_value();
  return p;
}

ConvUpdateInputs check_conv_update_inputs(const char* op, const at::Tensor& x, const at::Tensor& conv_state,
                                          const at::Tensor& weight, const OptTensor& bias,
                                          const OptTensor& conv_state_indices) {
  ConvUpdateInputs in;
  MAMBA_CHECK(x.dim() == 2 || x.dim() == 3, op, "x must be (batch, dim) or (batch, dim, seqlen), got shape ",
              x.sym_sizes());
  check_x_dtype(op, x);
  in.x3 = x.dim() == 2 ? x.unsqueeze(-1) : x;
  in.batch = in.x3.sym_size(0);
  in.dim = in.x3.sym_size(1);
  in.seqlen = in.x3.sym_size(2);
  in.acc_dtype = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  check_weight(op, weight, x, in.dim, &in.width);
  check_width(op, in.width, x, kMaxWidthCpu);
  in.weight = weight;
  in.bias = check_bias(op, bias, x, weight, in.dim);
  check_device(op, "conv_state", conv_state, x, "x");
  check_rank(op, "conv_state", conv_state, 3);
  check_dtype(op, "conv_state", conv_state, x.scalar_type(), "same as x");
  in.state_len = conv_state.sym_size(2);
  MAMBA_CHECK(conv_state.sym_size(1) == in.dim && in.state_len >= in.width - 1, op,
              "conv_state must have shape (batch or n_states, dim, state_len) with dim = ", in.dim,
              " and state_len >= width - 1 = ", in.width - 1, ", got ", conv_state.sym_sizes());
  if (conv_state_indices) {
    in.conv_state_indices =
        check_state_indices(op, "conv_state_indices", *conv_state_indices, in.batch, x, "x");
  } else {
    MAMBA_CHECK(conv_state.sym_size(0) == in.batch, op, "conv_state has ", conv_state.sym_size(0),
                " rows but x has batch ", in.batch, "; pass conv_state_indices to pick rows of a larger pool");
  }
  in.conv_state = conv_state;
  return in;
}

CausalConv1dUpdateParams make_conv_update_params(const ConvUpdateInputs& in, bool silu, const at::Tensor& out3,
                                                 const at::Tensor& weight_acc, const OptTensor& bias_acc) {
  CausalConv1dUpdateParams p;
  p.batch = in.x3.size(0);
  p.dim = in.x3.size(1);
  p.seqlen = in.x3.size(2);
  p.width = in.weight.size(1);
  p.state_len = in.conv_state.size(2);
  p.silu = silu;
  p.x_batch_stride = in.x3.stride(0);
  p.x_dim_stride = in.x3.stride(1);
  p.x_time_stride = in.x3.stride(2);
  p.out_batch_stride = out3.stride(0);
  p.out_dim_stride = out3.stride(1);
  p.out_time_stride = out3.stride(2);
  p.state_batch_stride = in.conv_state.stride(0);
  p.state_dim_stride = in.conv_state.stride(1);
  p.state_time_stride = in.conv_state.stride(2);
  p.x_ptr = in.x3.const_data_ptr();
  p.weight_ptr = weight_acc.const_data_ptr();
  p.bias_ptr = bias_acc ? bias_acc->const_data_ptr() : nullptr;
  p.state_indices_ptr = in.conv_state_indices ? in.conv_state_indices->const_data_ptr<int32_t>() : nullptr;
  p.conv_state_ptr = in.conv_state.data_ptr();
  p.out_ptr = out3.data_ptr();
  return p;
}

}  // namespace mamba_ext
