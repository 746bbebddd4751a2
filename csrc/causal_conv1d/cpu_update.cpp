// CPU decode step(s) of the causal conv: for each (batch, channel) row, token i sees the window
// [conv_state[-(W-1):], x[..i]] (the last W inputs), then the state keeps the last state_len inputs, updated
// in place. Parallel over rows. Instantiations: 4 input dtypes.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>

#include "causal_conv1d/args.h"
#include "common/checks.h"
#include "common/state_indices.h"

namespace mamba_ext {
namespace {

template <typename input_t, typename acc_t>
void update_kernel(const CausalConv1dUpdateParams& p) {
  const int64_t W = p.width, L = p.seqlen, S = p.state_len;
  at::parallel_for(0, p.batch * p.dim, 256, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / p.dim, d = row % p.dim;
      auto* out = static_cast<input_t*>(p.out_ptr) + b * p.out_batch_stride + d * p.out_dim_stride;
      const int64_t sb = p.state_indices_ptr ? p.state_indices_ptr[b] : b;
      if (sb < 0) {  // padding row
        for (int64_t i = 0; i < L; ++i) out[i * p.out_time_stride] = input_t(0);
        continue;
      }
      const auto* x = static_cast<const input_t*>(p.x_ptr) + b * p.x_batch_stride + d * p.x_dim_stride;
      auto* state = static_cast<input_t*>(p.conv_state_ptr) + sb * p.state_batch_stride + d * p.state_dim_stride;
      // Element q of the sequence [conv_state, x] (length S + L).
      const auto at = [&](int64_t q) -> acc_t {
        return static_cast<acc_t>(q < S ? state[q * p.state_time_stride] : x[(q - S) * p.x_time_stride]);
      };
      const acc_t* w = static_cast<const acc_t*>(p.weight_ptr) + d * W;
      const acc_t bias = p.bias_ptr ? static_cast<const acc_t*>(p.bias_ptr)[d] : acc_t(0);
      for (int64_t i = 0; i < L; ++i) {
        acc_t y = bias;
        for (int64_t k = 0; k < W; ++k) y += w[k] * at(S - (W - 1) + i + k);
        if (p.silu) y = y / (acc_t(1) + std::exp(-y));
        out[i * p.out_time_stride] = static_cast<input_t>(y);
      }
      // Shift left by L in place: ascending j reads element j + L before anything at or past it is written.
      for (int64_t j = 0; j < S; ++j) {
        const int64_t q = L + j;
        state[j * p.state_time_stride] = q < S ? state[q * p.state_time_stride] : x[(q - S) * p.x_time_stride];
      }
    }
  });
}

at::Tensor causal_conv1d_update_cpu(const at::Tensor& x, at::Tensor& conv_state, const at::Tensor& weight,
                                    const OptTensor& bias, std::optional<c10::string_view> activation,
                                    const OptTensor& conv_state_indices) {
  const char* op = "causal_conv1d_update";
  const bool silu = parse_activation(op, activation);
  const ConvUpdateInputs in = check_conv_update_inputs(op, x, conv_state, weight, bias, conv_state_indices);
  if (in.conv_state_indices) {
    check_state_indices_values(op, "conv_state_indices", *in.conv_state_indices, conv_state.size(0));
  }
  const at::Tensor weight_acc = weight.to(in.acc_dtype).contiguous();
  const OptTensor bias_acc = bias ? OptTensor(bias->to(in.acc_dtype).contiguous()) : std::nullopt;
  at::Tensor out = at::empty(x.sizes(), x.options());
  const at::Tensor out3 = x.dim() == 2 ? out.unsqueeze(-1) : out;
  const CausalConv1dUpdateParams p = make_conv_update_params(in, silu, out3, weight_acc, bias_acc);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "causal_conv1d_update_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    update_kernel<scalar_t, acc_t>(p);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mamba_ext, CPU, m) { m.impl("causal_conv1d_update", &causal_conv1d_update_cpu); }

}  // namespace mamba_ext
