// CUDA host wrappers of causal_conv1d_fwd / causal_conv1d_bwd: checks, outputs, launch (kernel.cuh).
// Instantiations at each launch site: 3 dtypes x 3 widths = 9 (the backward twice: with and without seq_idx),
// and 3 weight dtypes for the weight-gradient sum.
// cu_seqlens (per-sequence states) runs these same kernels with a seq_idx, on the packed row or on one with
// each sequence's initial states inserted before it, and gathers the per-sequence states and their gradients
// from it (cuda_sequence_states.h).
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>

#include "causal_conv1d/args.h"
#include "causal_conv1d/cuda_sequence_states.h"
#include "causal_conv1d/cuda_weights.h"
#include "causal_conv1d/kernel.cuh"
#include "causal_conv1d/weight_grad_kernel.cuh"
#include "common/cu_seqlens.h"
#include "common/cuda_dispatch.h"

namespace mamba_ext {
namespace {

// Calls fn with std::integral_constant<int, width> for width 2, 3 or 4 (the checks allow no other on CUDA).
template <typename Fn>
void dispatch_width(const char* op, int64_t width, Fn&& fn) {
  switch (width) {
    case 2: fn(std::integral_constant<int, 2>()); break;
    case 3: fn(std::integral_constant<int, 3>()); break;
    case 4: fn(std::integral_constant<int, 4>()); break;
    default: MAMBA_CHECK(false, op, "weight width ", width, " has no CUDA kernel");
  }
}

// Grid (dim, n_chunks, batch), see kernel.cuh.
dim3 conv_grid(const char* op, const CausalConv1dParams& p) {
  constexpr int64_t kMaxYZ = 65535, kMaxX = std::numeric_limits<int32_t>::max();
  MAMBA_CHECK(p.dim <= kMaxX && p.n_chunks <= kMaxYZ && p.batch <= kMaxYZ, op, "x of shape (", p.batch, ", ",
              p.dim, ", ", p.seqlen, ") is too large for the CUDA grid (batch and seqlen / ", cuda::kConvChunk,
              " must be at most ", kMaxYZ, ")");
  return dim3(static_cast<unsigned>(p.dim), static_cast<unsigned>(p.n_chunks), static_cast<unsigned>(p.batch));
}

// The ids of the packed row's sequences: given along with cu_seqlens by the public op, else derived from it.
at::Tensor packed_seq_idx(const ConvInputs& in) {
  return in.seq_idx ? *in.seq_idx : seq_idx_from_cu_seqlens(*in.cu_seqlens, in.seqlen);
}

std::tuple<at::Tensor, at::Tensor> causal_conv1d_fwd_cuda(const at::Tensor& x, const at::Tensor& weight,
                                                          const OptTensor& bias, const OptTensor& initial_states,
                                                          const OptTensor& seq_idx, bool silu,
                                                          const OptTensor& cu_seqlens) {
  const char* op = "causal_conv1d_fwd";
  const ConvInputs in = check_conv_inputs(op, x, weight, bias, initial_states, seq_idx, cu_seqlens);
  if (cu_seqlens) {
    const auto conv_row = [&](const at::Tensor& row, const at::Tensor& row_seq_idx) {
      return std::get<0>(causal_conv1d_fwd_cuda(row, weight, bias, std::nullopt, row_seq_idx, silu, {}));
    };
    return per_sequence_conv_fwd(in.x, in.initial_states, *cu_seqlens, packed_seq_idx(in), in.width.expect_int(),
                                 conv_row);
  }
  const c10::cuda::CUDAGuard guard(x.device());
  const KernelWeights kw = kernel_weights(weight, bias, x.scalar_type());
  CausalConv1dParams p = make_conv_params(in, silu, kw.weight, kw.bias);
  p.weight_in_input_dtype = kw.in_input_dtype;
  at::Tensor out = at::empty({p.batch, p.dim, p.seqlen}, x.options());
  if (p.seqlen == 0) {  // nothing to convolve; the final states are the initial states
    return {out, in.initial_states ? in.initial_states->clone() : at::zeros({p.batch, p.dim, p.width - 1}, x.options())};
  }
  at::Tensor final_states = at::empty({p.batch, p.dim, p.width - 1}, x.options());
  if (p.batch * p.dim == 0) return {out, final_states};
  p.out_batch_stride = out.stride(0);
  p.out_dim_stride = out.stride(1);
  p.out_ptr = out.data_ptr();
  p.final_states_ptr = final_states.data_ptr();
  p.n_chunks = (p.seqlen + cuda::kConvChunk - 1) / cuda::kConvChunk;
  p.vec_io = cuda::rows_aligned(in.x, cuda::kConvElts) && cuda::rows_aligned(out, cuda::kConvElts);
  const dim3 grid = conv_grid(op, p);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  cuda::dispatch_float_type(op, x.scalar_type(), [&](auto* type_tag) {
    using input_t = std::remove_pointer_t<decltype(type_tag)>;
    dispatch_width(op, p.width, [&](auto w) {
      cuda::causal_conv1d_fwd_kernel<input_t, decltype(w)::value><<<grid, cuda::kConvThreads, 0, stream>>>(p);
    });
  });
  cuda::check_launch(op, cudaGetLastError());
  return {out, final_states};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> causal_conv1d_bwd_cuda(
    const at::Tensor& dout, const OptTensor& dfinal_states, const at::Tensor& x, const at::Tensor& weight,
    const OptTensor& bias, const OptTensor& initial_states, const OptTensor& seq_idx, bool silu,
    const OptTensor& cu_seqlens) {
  const char* op = "causal_conv1d_bwd";
  const ConvInputs in = check_conv_inputs(op, x, weight, bias, initial_states, seq_idx, cu_seqlens);
  check_conv_grads(op, in, dout, dfinal_states);
  if (cu_seqlens) {
    const auto conv_row_bwd = [&](const at::Tensor& row_dout, const at::Tensor& row, const at::Tensor& row_seq_idx) {
      const auto grads =
          causal_conv1d_bwd_cuda(row_dout, std::nullopt, row, weight, bias, std::nullopt, row_seq_idx, silu, {});
      return std::make_tuple(std::get<0>(grads), std::get<1>(grads), std::get<2>(grads));
    };
    return per_sequence_conv_bwd(dout, dfinal_states, in.x, in.initial_states, *cu_seqlens, packed_seq_idx(in),
                                 in.width.expect_int(), conv_row_bwd);
  }
  const c10::cuda::CUDAGuard guard(x.device());
  const KernelWeights kw = kernel_weights(weight, bias, x.scalar_type());
  CausalConv1dParams p = make_conv_params(in, silu, kw.weight, kw.bias);
  p.weight_in_input_dtype = kw.in_input_dtype;
  const int64_t W = p.width;
  at::Tensor dx = at::empty({p.batch, p.dim, p.seqlen}, x.options());
  if (p.seqlen == 0 || p.batch * p.dim == 0) {  // no outputs: only dfinal_states flows (into the initial states)
    const at::Tensor dinit = dfinal_states ? dfinal_states->clone() : at::zeros({p.batch, p.dim, W - 1}, x.options());
    return {dx, at::zeros({p.dim, W}, weight.options()), at::zeros({p.dim}, weight.options()), dinit};
  }
  const at::Tensor dout_c = time_contiguous(dout);
  const OptTensor dfinal_c = dfinal_states ? OptTensor(dfinal_states->contiguous()) : std::nullopt;
  at::Tensor dinitial_states = at::empty({p.batch, p.dim, W - 1}, x.options());
  p.n_chunks = (p.seqlen + cuda::kConvChunk - 1) / cuda::kConvChunk;
  at::Tensor partial = at::empty({p.batch * p.n_chunks, p.dim, W + 1}, x.options().dtype(at::kFloat));
  p.dout_batch_stride = dout_c.stride(0);
  p.dout_dim_stride = dout_c.stride(1);
  p.dout_ptr = dout_c.const_data_ptr();
  p.dfinal_states_ptr = dfinal_c ? dfinal_c->const_data_ptr() : nullptr;
  p.dx_batch_stride = dx.stride(0);
  p.dx_dim_stride = dx.stride(1);
  p.dx_ptr = dx.data_ptr();
  p.dinitial_states_ptr = dinitial_states.data_ptr();
  p.dweight_partial_ptr = partial.data_ptr<float>();
  p.vec_io = cuda::rows_aligned(in.x, cuda::kConvElts) && cuda::rows_aligned(dout_c, cuda::kConvElts) &&
             cuda::rows_aligned(dx, cuda::kConvElts);
  const dim3 grid = conv_grid(op, p);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  cuda::dispatch_float_type(op, x.scalar_type(), [&](auto* type_tag) {
    using input_t = std::remove_pointer_t<decltype(type_tag)>;
    dispatch_width(op, W, [&](auto w) {
      constexpr int kWidth = decltype(w)::value;
      if (p.seq_idx_ptr) {
        cuda::causal_conv1d_bwd_kernel<input_t, kWidth, true><<<grid, cuda::kConvThreads, 0, stream>>>(p);
      } else {
        cuda::causal_conv1d_bwd_kernel<input_t, kWidth, false><<<grid, cuda::kConvThreads, 0, stream>>>(p);
      }
    });
  });
  cuda::check_launch(op, cudaGetLastError());
  // Sum the per-(batch, chunk) parts in a fixed order (no atomics: deterministic), straight into the weight's
  // dtype when it is one the kernel writes (else into fp32, then converted).
  const at::ScalarType wt = weight.scalar_type();
  const bool direct = wt == at::kFloat || wt == at::kHalf || wt == at::kBFloat16;
  at::Tensor dweight = at::empty({p.dim, W}, weight.options().dtype(direct ? wt : at::kFloat));
  at::Tensor dbias = at::empty({p.dim}, dweight.options());
  const int64_t entries = p.dim * (W + 1);
  const unsigned blocks = static_cast<unsigned>((entries + cuda::kWeightGradThreads - 1) / cuda::kWeightGradThreads);
  cuda::dispatch_float_type(op, dweight.scalar_type(), [&](auto* type_tag) {
    using weight_t = std::remove_pointer_t<decltype(type_tag)>;
    cuda::conv_weight_grad_kernel<weight_t><<<blocks, cuda::kWeightGradThreads, 0, stream>>>(
        partial.const_data_ptr<float>(), partial.size(0), p.dim, static_cast<int>(W),
        static_cast<weight_t*>(dweight.data_ptr()), static_cast<weight_t*>(dbias.data_ptr()));
  });
  cuda::check_launch(op, cudaGetLastError());
  if (!direct) return {dx, dweight.to(wt), dbias.to(wt), dinitial_states};
  return {dx, dweight, dbias, dinitial_states};
}

}  // namespace

TORCH_LIBRARY_IMPL(mamba_ext, CUDA, m) {
  m.impl("causal_conv1d_fwd", &causal_conv1d_fwd_cuda);
  m.impl("causal_conv1d_bwd", &causal_conv1d_bwd_cuda);
}

}  // namespace mamba_ext
