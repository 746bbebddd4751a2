// Validation of causal-conv1d arguments (the convolution and its decode update) and the filling of their
// params structs. Shared by the CPU, CUDA and Meta kernels and the autograd wrapper, so every backend
// accepts exactly the same inputs and reports the same errors.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <optional>

#include "causal_conv1d/params.h"

namespace mamba_ext {

using OptTensor = std::optional<at::Tensor>;

// Validated causal_conv1d inputs; x has unit time stride, seq_idx is contiguous. With cu_seqlens
// (per-sequence states, common/cu_seqlens.h) initial/final states and their gradients have one row per
// sequence: state_rows is num_seqs, else batch.
struct ConvInputs {
  at::Tensor x, weight;
  OptTensor bias, initial_states, seq_idx, cu_seqlens;
  c10::SymInt batch, dim, seqlen, width, state_rows;  // symbolic under torch.compile
  at::ScalarType acc_dtype = at::kFloat;  // fp64 for fp64 x, else fp32
};

// activation None -> false, "silu" / "swish" -> true, anything else is an error naming the op.
bool parse_activation(const char* op, const std::optional<c10::string_view>& activation);

ConvInputs check_conv_inputs(const char* op, const at::Tensor& x, const at::Tensor& weight, const OptTensor& bias,
                             const OptTensor& initial_states, const OptTensor& seq_idx,
                             const OptTensor& cu_seqlens = {});

// Checks the backward-only arguments against the forward inputs.
void check_conv_grads(const char* op, const ConvInputs& in, const at::Tensor& dout, const OptTensor& dfinal_states);

// Sizes, strides and input pointers of real tensors. weight_acc / bias_acc are weight and bias as the kernel
// reads them, contiguous: in the accumulation dtype (CUDA may keep x's dtype, see weight_in_input_dtype).
// They must outlive the kernel. Outputs are left to the backend.
CausalConv1dParams make_conv_params(const ConvInputs& in, bool silu, const at::Tensor& weight_acc,
                                    const OptTensor& bias_acc);

// Validated causal_conv1d_update inputs: x viewed as (batch, dim, seqlen) even when given as (batch, dim).
struct ConvUpdateInputs {
  at::Tensor x3, conv_state, weight;
  OptTensor bias, conv_state_indices;
  c10::SymInt batch, dim, seqlen, width, state_len;
  at::ScalarType acc_dtype = at::kFloat;
};

ConvUpdateInputs check_conv_update_inputs(const char* op, const at::Tensor& x, const at::Tensor& conv_state,
                                          const at::Tensor& weight, const OptTensor& bias,
                                          const OptTensor& conv_state_indices);

CausalConv1dUpdateParams make_conv_update_params(const ConvUpdateInputs& in, bool silu, const at::Tensor& out3,
                                                 const at::Tensor& weight_acc, const OptTensor& bias_acc);

}  // namespace mamba_ext
