// Per-sequence states of the CUDA causal conv with cu_seqlens (common/cu_seqlens.h), composed from the
// kernels' seq_idx path (which has no per-sequence states) and gathers, so the kernels stay as they are.
//
// Without initial states the packed row runs as it is, with its seq_idx, and each sequence's final states
// are gathered from x. Otherwise the kernels run on an "extended row": before each sequence i its W-1
// initial-state entries are inserted, and extended sequence i (its states, then its tokens) gets id i. A
// token then sees exactly its sequence's inputs and initial states, as when the sequence runs alone; final
// states and every gradient (dx, dinitial_states, dweight, dbias) are gathers of the extended row's values.
//
// Plain ATen ops on the device, no CUDA headers (so this file also compiles in the CPU build). Data moves
// only by gathers (index_select): no scatter, index_put or index_add, which use atomics or are
// nondeterministic on CUDA, so the backward stays bitwise deterministic. No host-device sync: cu_seqlens is
// never read on the host.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <tuple>

#include "causal_conv1d/args.h"

namespace mamba_ext {

// The kernels on one row x (1, dim, len) with seq_idx (1, len) and no initial or final states: the forward
// returns out, the backward (dout, x, seq_idx) returns dx, dweight and dbias.
using RowConvForward = std::function<at::Tensor(const at::Tensor& x, const at::Tensor& seq_idx)>;
using RowConvBackward = std::function<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor& dout, const at::Tensor& x, const at::Tensor& seq_idx)>;

// causal_conv1d_fwd with cu_seqlens: (out, final_states (num_seqs, dim, W-1)). x is (1, dim, seqlen),
// seq_idx the ids derived from cu_seqlens, initial_states (num_seqs, dim, W-1) or absent (zeros).
std::tuple<at::Tensor, at::Tensor> per_sequence_conv_fwd(const at::Tensor& x, const OptTensor& initial_states,
                                                         const at::Tensor& cu_seqlens, const at::Tensor& seq_idx,
                                                         int64_t width, const RowConvForward& conv);

// causal_conv1d_bwd with cu_seqlens: (dx, dweight, dbias, dinitial_states (num_seqs, dim, W-1)), the last
// also without initial states (the gradient of their zeros). Always runs on the extended row; a caller that
// needs neither dinitial_states nor dfinal_states gets the same dx, dweight and dbias from the packed row
// with its seq_idx alone, with several times less memory traffic (no gathers of x, dout and dx).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> per_sequence_conv_bwd(
    const at::Tensor& dout, const OptTensor& dfinal_states, const at::Tensor& x, const OptTensor& initial_states,
    const at::Tensor& cu_seqlens, const at::Tensor& seq_idx, int64_t width, const RowConvBackward& conv_bwd);

}  // namespace mamba_ext
