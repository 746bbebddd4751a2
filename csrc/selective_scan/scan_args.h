// Validation of selective-scan arguments and the filling of SelectiveScanParams from tensors. Shared by the
// CPU, CUDA and Meta kernels and the autograd wrapper, so every backend accepts exactly the same inputs.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

#include "selective_scan/params.h"

namespace mamba_ext {

using OptTensor = std::optional<at::Tensor>;

// Validated inputs. B and C are 4-D (batch, groups, N, seqlen) views when input-dependent (a 3-D B is
// viewed with groups = 1) and (dim, N) when constant; every (.., seqlen) tensor has unit time stride.
// With cu_seqlens (per-sequence states, common/cu_seqlens.h) the states initial_state, last_state and their
// gradients have one row per sequence instead of one per batch row: state_rows is num_seqs, else batch.
struct ScanInputs {
  at::Tensor u, delta, A, B, C;
  OptTensor D, z, delta_bias, initial_state, seq_idx, cu_seqlens;
  c10::SymInt batch, dim, seqlen, dstate, n_groups = 1, state_rows;  // symbolic under torch.compile
  bool is_variable_B = true, is_variable_C = true;
  at::ScalarType state_dtype = at::kFloat;  // fp64 for fp64 inputs, else fp32
};

ScanInputs check_scan_inputs(const char* op, const at::Tensor& u, const at::Tensor& delta,
                             const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                             const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias,
                             const OptTensor& initial_state, const OptTensor& seq_idx = {},
                             const OptTensor& cu_seqlens = {});

// The internal ops take cu_seqlens (per-sequence states) only together with the seq_idx derived from it,
// which the public op passes along.
void check_ids_with_cu_seqlens(const char* op, const OptTensor& seq_idx);

// Number of chunks the forward saves a state for: ceil(seqlen / chunk_size).
c10::SymInt scan_num_chunks(const char* op, const c10::SymInt& seqlen, int64_t chunk_size);

// Sizes, strides and input pointers of real (not fake) tensors. Output pointers are left to the backend.
SelectiveScanParams make_scan_params(const ScanInputs& in, bool delta_softplus, int64_t chunk_size);

// What every backend's selective_scan_bwd returns: du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state.
using ScanGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                             at::Tensor, at::Tensor>;

// Checks the backward-only arguments (dout, dlast_state, chunk_states) against the forward inputs.
void check_scan_grads(const char* op, const ScanInputs& in, const at::Tensor& dout,
                      const OptTensor& dlast_state, const at::Tensor& chunk_states, int64_t chunk_size);

}  // namespace mamba_ext
