// CPU forward and backward of the causal depthwise conv1d (see params.h for the exact definition).
// Each (batch, channel) row works on its extended input xe = [initial_states, x] in the accumulation dtype;
// with per-sequence states (cu_seqlens) each sequence of the row is such a segment, with its own states.
// Forward: parallel over rows. Backward: parallel over channels, each task walking every batch row of its
// channels, so dweight and dbias are summed in a fixed order (deterministic, no atomics, no partials).
// Instantiations: 4 input dtypes.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "causal_conv1d/args.h"
#include "common/checks.h"
#include "common/cu_seqlens.h"

namespace mamba_ext {
namespace {

// Time steps [t0, t0 + L) of a batch row that are convolved together, and the row of the state tensors
// (initial/final states and their gradients) they start from and end in: the whole row (state row b) or,
// with per-sequence states, one sequence s (state row s).
struct Segment {
  int64_t t0, L, state_row;
};

std::vector<Segment> row_segments(const CausalConv1dParams& p, int64_t b) {
  if (!p.per_sequence_states) return {{0, p.seqlen, b}};
  std::vector<Segment> segs(p.state_rows);
  for (int64_t s = 0; s < p.state_rows; ++s) {
    segs[s] = {p.seq_bounds_ptr[s], p.seq_bounds_ptr[s + 1] - p.seq_bounds_ptr[s], s};
  }
  return segs;
}

// A segment's inputs and sequence ids, seen through the extended index e = p + (W-1) of time position
// p = t - t0 (t0 = 0 for whole rows).
template <typename input_t, typename acc_t>
struct Row {
  const CausalConv1dParams& p;
  int64_t b, d, W, L;
  int64_t state;           // offset of the segment's (W-1) state values in the (state_rows, dim, W-1) tensors
  std::vector<acc_t>& xe;  // (W-1) + L values
  const int32_t* seq;      // nullptr: no masking (per-sequence segments need none)

  Row(const CausalConv1dParams& p_, int64_t b_, int64_t d_, const Segment& seg, std::vector<acc_t>& buf)
      : p(p_), b(b_), d(d_), W(p_.width), L(seg.L), state((seg.state_row * p_.dim + d_) * (p_.width - 1)), xe(buf) {
    // seq ids of an empty row never matter (no outputs, final_states come from the initial states alone).
    seq = p.seq_idx_ptr && L > 0 && !p.per_sequence_states ? p.seq_idx_ptr + b * p.seqlen : nullptr;
    xe.resize(W - 1 + L);
    const auto* init = static_cast<const input_t*>(p.initial_states_ptr);
    for (int64_t e = 0; e < W - 1; ++e) xe[e] = init ? static_cast<acc_t>(init[state + e]) : acc_t(0);
    const auto* x = static_cast<const input_t*>(p.x_ptr) + b * p.x_batch_stride + d * p.x_dim_stride + seg.t0;
    for (int64_t t = 0; t < L; ++t) xe[W - 1 + t] = static_cast<acc_t>(x[t]);
  }
  // Sequence id of extended index e; the initial states (e < W-1) belong to the row's first sequence.
  int32_t seq_of(int64_t e) const { return e < W - 1 ? seq[0] : seq[e - (W - 1)]; }
  // Whether xe[e] is visible from time step t.
  bool visible(int64_t e, int64_t t) const { return !seq || seq_of(e) == seq[t]; }
};

template <typename acc_t>
acc_t conv_at(const acc_t* w, acc_t bias, const std::vector<acc_t>& xe, int64_t t, int64_t W) {
  acc_t acc = bias;
  for (int64_t k = 0; k < W; ++k) acc += w[k] * xe[t + k];
  return acc;
}

template <typename input_t, typename acc_t, typename RowT>
acc_t conv_at_masked(const acc_t* w, acc_t bias, const RowT& r, int64_t t) {
  if (!r.seq) return conv_at(w, bias, r.xe, t, r.W);
  acc_t acc = bias;
  for (int64_t k = 0; k < r.W; ++k) acc += r.visible(t + k, t) ? w[k] * r.xe[t + k] : acc_t(0);
  return acc;
}

template <typename acc_t>
acc_t sigmoid(acc_t v) {
  return acc_t(1) / (acc_t(1) + std::exp(-v));
}

template <typename input_t, typename acc_t>
void forward_kernel(const CausalConv1dParams& p) {
  const int64_t W = p.width, grain = std::max<int64_t>(1, 32768 / (p.seqlen * W + 1));
  at::parallel_for(0, p.batch * p.dim, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf;
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / p.dim, d = row % p.dim;
      const acc_t* w = static_cast<const acc_t*>(p.weight_ptr) + d * W;
      const acc_t bias = p.bias_ptr ? static_cast<const acc_t*>(p.bias_ptr)[d] : acc_t(0);
      for (const Segment& seg : row_segments(p, b)) {
        const Row<input_t, acc_t> r(p, b, d, seg, buf);
        auto* out = static_cast<input_t*>(p.out_ptr) + b * p.out_batch_stride + d * p.out_dim_stride + seg.t0;
        for (int64_t t = 0; t < r.L; ++t) {
          const acc_t y = conv_at_masked<input_t>(w, bias, r, t);
          out[t] = static_cast<input_t>(p.silu ? y * sigmoid(y) : y);
        }
        // final_states[j] = xe[L + j], zero where it belongs to another sequence than the last token.
        auto* fin = static_cast<input_t*>(p.final_states_ptr) + r.state;
        for (int64_t j = 0; j < W - 1; ++j) {
          fin[j] = static_cast<input_t>(r.visible(r.L + j, r.L - 1) ? r.xe[r.L + j] : acc_t(0));
        }
      }
    }
  });
}

template <typename input_t, typename acc_t>
void backward_kernel(const CausalConv1dParams& p, acc_t* dweight, acc_t* dbias) {
  const int64_t W = p.width;
  const int64_t grain = std::max<int64_t>(1, 32768 / (p.batch * p.seqlen * W + 1));
  at::parallel_for(0, p.dim, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf, g(p.seqlen), dxe(W - 1 + p.seqlen);
    for (int64_t d = begin; d < end; ++d) {
      const acc_t* w = static_cast<const acc_t*>(p.weight_ptr) + d * W;
      const acc_t bias = p.bias_ptr ? static_cast<const acc_t*>(p.bias_ptr)[d] : acc_t(0);
      std::vector<acc_t> dw(W, acc_t(0));
      acc_t db = 0;
      for (int64_t b = 0; b < p.batch; ++b) {
        for (const Segment& seg : row_segments(p, b)) {
          const Row<input_t, acc_t> r(p, b, d, seg, buf);
          const int64_t L = r.L;
          // g[t]: gradient at the pre-activation, recomputed from x.
          const auto* dout =
              static_cast<const input_t*>(p.dout_ptr) + b * p.dout_batch_stride + d * p.dout_dim_stride + seg.t0;
          for (int64_t t = 0; t < L; ++t) {
            acc_t gt = static_cast<acc_t>(dout[t]);
            if (p.silu) {
              const acc_t y = conv_at_masked<input_t>(w, bias, r, t), s = sigmoid(y);
              gt *= s * (acc_t(1) + y * (acc_t(1) - s));
            }
            g[t] = gt;
            db += gt;
            for (int64_t k = 0; k < W; ++k) dw[k] += r.visible(t + k, t) ? gt * r.xe[t + k] : acc_t(0);
          }
          // dxe[e] = sum_k w[k] g[e - k] over visible taps, plus the gradient of final_states[e - L].
          const auto* dfin = static_cast<const input_t*>(p.dfinal_states_ptr);
          for (int64_t e = 0; e < W - 1 + L; ++e) {
            acc_t acc = 0;
            for (int64_t k = std::max<int64_t>(0, e - L + 1); k < W && k <= e; ++k) {
              if (r.visible(e, e - k)) acc += w[k] * g[e - k];
            }
            if (dfin && e >= L && r.visible(e, L - 1)) acc += static_cast<acc_t>(dfin[r.state + e - L]);
            dxe[e] = acc;
          }
          auto* dinit = static_cast<input_t*>(p.dinitial_states_ptr) + r.state;
          for (int64_t e = 0; e < W - 1; ++e) dinit[e] = static_cast<input_t>(dxe[e]);
          auto* dx = static_cast<input_t*>(p.dx_ptr) + b * p.dx_batch_stride + d * p.dx_dim_stride + seg.t0;
          for (int64_t t = 0; t < L; ++t) dx[t] = static_cast<input_t>(dxe[W - 1 + t]);
        }
      }
      std::copy(dw.begin(), dw.end(), dweight + d * W);
      dbias[d] = db;
    }
  });
}

std::tuple<at::Tensor, at::Tensor> causal_conv1d_fwd_cpu(const at::Tensor& x, const at::Tensor& weight,
                                                         const OptTensor& bias, const OptTensor& initial_states,
                                                         const OptTensor& seq_idx, bool silu,
                                                         const OptTensor& cu_seqlens) {
  const char* op = "causal_conv1d_fwd";
  const ConvInputs in = check_conv_inputs(op, x, weight, bias, initial_states, seq_idx, cu_seqlens);
  const at::Tensor weight_acc = weight.to(in.acc_dtype).contiguous();
  const OptTensor bias_acc = bias ? OptTensor(bias->to(in.acc_dtype).contiguous()) : std::nullopt;
  CausalConv1dParams p = make_conv_params(in, silu, weight_acc, bias_acc);
  const std::vector<int64_t> bounds =
      cu_seqlens ? cpu_sequence_bounds(op, *cu_seqlens, in.seq_idx, p.seqlen) : std::vector<int64_t>();
  p.seq_bounds_ptr = bounds.data();
  at::Tensor out = at::empty({p.batch, p.dim, p.seqlen}, x.options());
  at::Tensor final_states = at::empty({p.state_rows, p.dim, p.width - 1}, x.options());
  p.out_batch_stride = out.stride(0);
  p.out_dim_stride = out.stride(1);
  p.out_ptr = out.data_ptr();
  p.final_states_ptr = final_states.data_ptr();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "causal_conv1d_fwd_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    forward_kernel<scalar_t, acc_t>(p);
  });
  return {out, final_states};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> causal_conv1d_bwd_cpu(
    const at::Tensor& dout, const OptTensor& dfinal_states, const at::Tensor& x, const at::Tensor& weight,
    const OptTensor& bias, const OptTensor& initial_states, const OptTensor& seq_idx, bool silu,
    const OptTensor& cu_seqlens) {
  const char* op = "causal_conv1d_bwd";
  const ConvInputs in = check_conv_inputs(op, x, weight, bias, initial_states, seq_idx, cu_seqlens);
  check_conv_grads(op, in, dout, dfinal_states);
  const at::Tensor weight_acc = weight.to(in.acc_dtype).contiguous();
  const OptTensor bias_acc = bias ? OptTensor(bias->to(in.acc_dtype).contiguous()) : std::nullopt;
  CausalConv1dParams p = make_conv_params(in, silu, weight_acc, bias_acc);
  const std::vector<int64_t> bounds =
      cu_seqlens ? cpu_sequence_bounds(op, *cu_seqlens, in.seq_idx, p.seqlen) : std::vector<int64_t>();
  p.seq_bounds_ptr = bounds.data();
  const at::Tensor dout_c = time_contiguous(dout);
  const OptTensor dfinal_c = dfinal_states ? OptTensor(dfinal_states->contiguous()) : std::nullopt;
  at::Tensor dx = at::empty({p.batch, p.dim, p.seqlen}, x.options());
  at::Tensor dinitial_states = at::empty({p.state_rows, p.dim, p.width - 1}, x.options());
  at::Tensor dweight = at::zeros({p.dim, p.width}, weight.options().dtype(in.acc_dtype));
  at::Tensor dbias = at::zeros({p.dim}, weight.options().dtype(in.acc_dtype));
  p.dout_batch_stride = dout_c.stride(0);
  p.dout_dim_stride = dout_c.stride(1);
  p.dout_ptr = dout_c.const_data_ptr();
  p.dfinal_states_ptr = dfinal_c ? dfinal_c->const_data_ptr() : nullptr;
  p.dx_batch_stride = dx.stride(0);
  p.dx_dim_stride = dx.stride(1);
  p.dx_ptr = dx.data_ptr();
  p.dinitial_states_ptr = dinitial_states.data_ptr();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "causal_conv1d_bwd_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    backward_kernel<scalar_t, acc_t>(p, dweight.data_ptr<acc_t>(), dbias.data_ptr<acc_t>());
  });
  return {dx, dweight.to(weight.scalar_type()), dbias.to(weight.scalar_type()), dinitial_states};
}

}  // namespace

TORCH_LIBRARY_IMPL(mamba_ext, CPU, m) {
  m.impl("causal_conv1d_fwd", &causal_conv1d_fwd_cpu);
  m.impl("causal_conv1d_bwd", &causal_conv1d_bwd_cpu);
}

}  // namespace mamba_ext
