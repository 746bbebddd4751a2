// Packed variable-length sequences given as cu_seqlens, shared by selective_scan and causal_conv1d.
//
// cu_seqlens (num_seqs + 1,) int32 or int64, on the device of the input, with batch == 1: sequence i is the
// tokens [cu_seqlens[i], cu_seqlens[i + 1]) of the single row; cu_seqlens[0] == 0, cu_seqlens[-1] == seqlen,
// non-decreasing (empty sequences allowed). Each sequence has its own initial and final state, stored as row
// i of a (num_seqs, dim, ...) state tensor.
//
// The public ops turn cu_seqlens into a seq_idx (token t of sequence i gets id i), which is what the CUDA
// kernels (and the CPU scan's piece splitting) consume; the internal fwd/bwd ops then receive both, and
// cu_seqlens there means "per-sequence states". Values are checked only where they can be read without a
// device sync (real CPU tensors); on CUDA a malformed cu_seqlens is not detected.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <vector>

namespace mamba_ext {

// Rank, dtype, device, batch == 1 and (on CPU tensors holding data) the values. Returns num_seqs, symbolic
// under torch.compile.
c10::SymInt check_cu_seqlens(const char* op, const at::Tensor& cu_seqlens, const at::Tensor& ref,
                             const char* ref_name, const c10::SymInt& batch, const c10::SymInt& seqlen);

// The public ops take seq_idx or cu_seqlens, not both.
void check_not_both(const char* op, const std::optional<at::Tensor>& seq_idx,
                    const std::optional<at::Tensor>& cu_seqlens);

// The (1, seqlen) int32 seq_idx with id i for the tokens of sequence i. No device sync (searchsorted on the
// device).
at::Tensor seq_idx_from_cu_seqlens(const at::Tensor& cu_seqlens, const c10::SymInt& seqlen);

// For CPU kernels: the sequence boundaries as int64 (num_seqs + 1 values), after checking the values and,
// when seq_idx is given, that it is the one derived from cu_seqlens (the kernels index states by its ids).
std::vector<int64_t> cpu_sequence_bounds(const char* op, const at::Tensor& cu_seqlens,
                                         const std::optional<at::Tensor>& seq_idx, int64_t seqlen);

}  // namespace mamba_ext
