// C++ API of mamba_ext. Every function calls its op through the torch dispatcher, so C++ callers get the
// same CPU/CUDA kernels and autograd as Python callers. Shapes use the (batch, dim, seqlen) notation.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <optional>
#include <tuple>

namespace mamba_ext {

using OptTensor = std::optional<at::Tensor>;

// Selective scan (S6). u, delta, z: (batch, dim, seqlen); A: (dim, N) fp32; B, C: (dim, N) fp32 or
// (batch, N, seqlen) / (batch, groups, N, seqlen) in u's dtype; D, delta_bias: (dim,) fp32;
// initial_state: (batch, dim, N) fp32; seq_idx: (batch, seqlen) int32 ids of packed sequences (the state
// restarts from zero wherever the id changes; initial_state feeds the first sequence of a row, last_state is
// the state after its last one). Returns (out (batch, dim, seqlen), last_state (batch, dim, N)), both
// differentiable. fp64 inputs use fp64 parameters and states instead of fp32.
// cu_seqlens (instead of seq_idx): (num_seqs + 1,) int32/int64 on u's device, batch 1; sequence i is tokens
// [cu_seqlens[i], cu_seqlens[i + 1]) (0 first, seqlen last, non-decreasing, empty sequences allowed; values
// are checked on CPU only, to avoid a device sync). Then initial_state is (num_seqs, dim, N), one per
// sequence, and last_state (num_seqs, dim, N) holds each sequence's final state (an empty sequence returns
// its initial state, or zeros); both are differentiable, on CPU and CUDA.
std::tuple<at::Tensor, at::Tensor> selective_scan(const at::Tensor& u, const at::Tensor& delta,
                                                  const at::Tensor& A, const at::Tensor& B,
                                                  const at::Tensor& C, const OptTensor& D = {},
                                                  const OptTensor& z = {}, const OptTensor& delta_bias = {},
                                                  bool delta_softplus = false,
                                                  const OptTensor& initial_state = {},
                                                  const OptTensor& seq_idx = {},
                                                  const OptTensor& cu_seqlens = {});

// Internal forward: also returns chunk_states (batch, dim, ceil(seqlen / chunk_size), N), the state
// entering each chunk, which the backward recomputes from; with save_states = false (no backward to come)
// it is neither written nor allocated, (batch, dim, 0, N). With cu_seqlens (per-sequence states) seq_idx
// must be the ids derived from it, as selective_scan passes them.
std::tuple<at::Tensor, at::Tensor, at::Tensor> selective_scan_fwd(
    const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
    const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias, bool delta_softplus,
    const OptTensor& initial_state, const OptTensor& seq_idx, int64_t chunk_size, const OptTensor& cu_seqlens = {},
    bool save_states = true);

// Internal backward. Returns (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state); dz is empty
// when z is absent. dlast_state is the incoming gradient of last_state (absent: zero). With cu_seqlens,
// dlast_state and dinitial_state are per sequence, (num_seqs, dim, N).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
selective_scan_bwd(const at::Tensor& dout, const OptTensor& dlast_state, const at::Tensor& u,
                   const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                   const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias, bool delta_softplus,
                   const OptTensor& initial_state, const OptTensor& seq_idx, const at::Tensor& chunk_states,
                   int64_t chunk_size, bool deterministic, const OptTensor& cu_seqlens = {});

// Chunk length of the saved states for tensors on this device type (the backward's recompute window).
int64_t selective_scan_chunk_size(c10::DeviceType device);

// Causal depthwise conv1d. x: (batch, dim, seqlen); weight: (dim, width), width 2..4 on CUDA (2..64 on CPU);
// bias: (dim,) in weight's dtype; activation: none or "silu"; initial_states: (batch, dim, width - 1) like x,
// the inputs before the first step; seq_idx: (batch, seqlen) int32, packed sequences (a token never sees an
// input of another sequence; the initial states belong to each row's first sequence). Returns
// (out (batch, dim, seqlen), final_states (batch, dim, width - 1): the last width - 1 inputs), both
// differentiable. Equals F.conv1d(x, weight.unsqueeze(1), bias, padding=width - 1, groups=dim)[..., :seqlen].
// cu_seqlens (instead of seq_idx): (num_seqs + 1,) int32/int64 on x's device, batch 1, as for
// selective_scan. Then initial_states is (num_seqs, dim, width - 1): the inputs before each sequence's first
// token; final_states (num_seqs, dim, width - 1) holds each sequence's last width - 1 inputs (reaching back
// into its initial states, or zeros, when it is shorter).
std::tuple<at::Tensor, at::Tensor> causal_conv1d(const at::Tensor& x, const at::Tensor& weight,
                                                 const OptTensor& bias = {},
                                                 std::optional<c10::string_view> activation = std::nullopt,
                                                 const OptTensor& initial_states = {}, const OptTensor& seq_idx = {},
                                                 const OptTensor& cu_seqlens = {});

// Internal forward and backward of causal_conv1d (silu: the activation flag). The backward recomputes the
// pre-activation from x and returns (dx, dweight, dbias, dinitial_states); dbias is computed also without a
// bias and dinitial_states also without initial states (the gradient of their zeros). With cu_seqlens the
// states and their gradients are per sequence and seq_idx must be the ids derived from it.
std::tuple<at::Tensor, at::Tensor> causal_conv1d_fwd(const at::Tensor& x, const at::Tensor& weight,
                                                     const OptTensor& bias, const OptTensor& initial_states,
                                                     const OptTensor& seq_idx, bool silu,
                                                     const OptTensor& cu_seqlens = {});
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> causal_conv1d_bwd(
    const at::Tensor& dout, const OptTensor& dfinal_states, const at::Tensor& x, const at::Tensor& weight,
    const OptTensor& bias, const OptTensor& initial_states, const OptTensor& seq_idx, bool silu,
    const OptTensor& cu_seqlens = {});

// Decode step(s) of the causal conv. x: (batch, dim) or (batch, dim, seqlen); conv_state: (batch, dim,
// state_len >= width - 1) like x, or (n_states, dim, state_len) with conv_state_indices (batch,) int32
// picking rows (negative: padding row, output zeros, state untouched). Updates conv_state in place (it keeps
// the last state_len inputs) and returns out shaped like x. Not differentiable.
at::Tensor causal_conv1d_update(const at::Tensor& x, at::Tensor& conv_state, const at::Tensor& weight,
                                const OptTensor& bias = {},
                                std::optional<c10::string_view> activation = std::nullopt,
                                const OptTensor& conv_state_indices = {});

// One recurrent step of the selective scan for decoding. state: (batch, dim, N) fp32 (fp64 for fp64 x),
// updated in place; x, dt, z: (batch, dim); A: (dim, N) fp32; B, C: (batch, N) or (batch, groups, N) like x;
// D, dt_bias: (dim,) fp32; state_batch_indices: (batch,) int32 rows of a state pool (n_states, dim, N),
// negative = padding row. Returns out (batch, dim) like x. Not differentiable.
at::Tensor selective_state_update(at::Tensor& state, const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                                  const at::Tensor& B, const at::Tensor& C, const OptTensor& D = {},
                                  const OptTensor& z = {}, const OptTensor& dt_bias = {}, bool dt_softplus = false,
                                  const OptTensor& state_batch_indices = {});

}  // namespace mamba_ext
