#include "causal_conv1d/cuda_sequence_states.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>

#include "common/cu_seqlens.h"

namespace mamba_ext {
namespace {

// State tensors (n, dim, halo) as state entries (dim, n * halo): entry i * halo + o of a channel is state o
// of sequence i, the order in which the extended row holds them. halo = W - 1 throughout.
at::Tensor as_state_entries(const at::Tensor& states) {
  return states.permute({1, 0, 2}).reshape({states.size(1), states.size(0) * states.size(2)});
}

at::Tensor as_states(const at::Tensor& entries, int64_t n, int64_t halo) {
  return entries.reshape({entries.size(0), n, halo}).permute({1, 0, 2}).contiguous();
}

// The last halo inputs of every sequence of row (dim, len), sequence i being [bounds[i], bounds[i + 1]), as
// states (n, dim, halo). Positions before a sequence's start (when it is shorter than halo) read as zero.
at::Tensor last_inputs_of_sequences(const at::Tensor& row, const at::Tensor& bounds, int64_t halo) {
  const int64_t n = bounds.size(0) - 1;
  if (row.size(1) == 0) return at::zeros({n, row.size(0), halo}, row.options());  // nothing to gather from
  const at::Tensor starts = bounds.slice(0, 0, n).unsqueeze(1), ends = bounds.slice(0, 1).unsqueeze(1);
  const at::Tensor positions = ends - halo + at::arange(halo, bounds.options());  // (n, halo)
  const at::Tensor entries =
      row.index_select(1, positions.clamp_min(0).flatten()).masked_fill((positions < starts).flatten(), 0);
  return as_states(entries, n, halo);
}

// The extended row of a packed row of seqlen tokens and n sequences: extended sequence i is sequence i's
// halo state entries followed by its tokens, so the row has seqlen + n * halo positions.
struct ExtendedRow {
  int64_t halo = 0;
  at::Tensor bounds;   // (n + 1,) int64: extended sequence i is [bounds[i], bounds[i + 1])
  at::Tensor seq_idx;  // (1, len) int32: id i on extended sequence i, for the kernels
  at::Tensor ids;      // (len,) int64: the same ids, for index arithmetic
  at::Tensor source;   // (len,) int64: what each position holds, as an index into [tokens, state entries]
};

ExtendedRow extended_row(const at::Tensor& cu_seqlens, int64_t seqlen, int64_t halo) {
  const at::Tensor cu = cu_seqlens.to(at::kLong);
  const int64_t n = cu.size(0) - 1, len = seqlen + n * halo;
  ExtendedRow r;
  r.halo = halo;
  r.bounds = cu + at::arange(n + 1, cu.options()) * halo;
  r.seq_idx = seq_idx_from_cu_seqlens(r.bounds, len);
  r.ids = r.seq_idx.squeeze(0).to(at::kLong);
  const at::Tensor positions = at::arange(len, cu.options());
  const at::Tensor offsets = positions - r.bounds.index_select(0, r.ids);  // within its extended sequence
  // State o of sequence i is state entry i * halo + o; token cu[i] + offset - halo is position - (i + 1) * halo.
  r.source = at::where(offsets < halo, seqlen + r.ids * halo + offsets, positions - (r.ids + 1) * halo);
  return r;
}

// tokens (1, dim, seqlen) with each sequence's state entries (dim, n * halo) inserted before it:
// (1, dim, seqlen + n * halo).
at::Tensor extend(const ExtendedRow& r, const at::Tensor& tokens, const at::Tensor& state_entries) {
  return at::cat({tokens.select(0, 0), state_entries}, 1).index_select(1, r.source).unsqueeze(0);
}

// Where token t of sequence seq_idx[t] sits in the extended row.
at::Tensor token_positions(const at::Tensor& seq_idx, int64_t halo) {
  const at::Tensor ids = seq_idx.squeeze(0).to(at::kLong);
  return at::arange(ids.size(0), ids.options()) + (ids + 1) * halo;
}

// Where the state entries sit in the extended row: state o of sequence i at bounds[i] + o.
at::Tensor state_positions(const ExtendedRow& r) {
  const int64_t n = r.bounds.size(0) - 1;
  return (r.bounds.slice(0, 0, n).unsqueeze(1) + at::arange(r.halo, r.bounds.options())).flatten();
}

// dfinal_states (n, dim, halo) at the last halo positions of each extended sequence (its final states),
// zero elsewhere: (1, dim, len). Extended sequences are at least halo long, so every final state is there.
at::Tensor final_states_on_row(const ExtendedRow& r, const at::Tensor& dfinal_states) {
  const at::Tensor positions = at::arange(r.ids.size(0), r.ids.options());
  const at::Tensor ends = r.bounds.index_select(0, r.ids + 1);
  const at::Tensor state = positions - (ends - r.halo);  // which final state a position holds; < 0: none
  const at::Tensor entry = r.ids * r.halo + state;
  return as_state_entries(dfinal_states).index_select(1, entry.clamp_min(0)).masked_fill(state < 0, 0).unsqueeze(0);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> per_sequence_conv_fwd(const at::Tensor& x, const OptTensor& initial_states,
                                                         const at::Tensor& cu_seqlens, const at::Tensor& seq_idx,
                                                         int64_t width, const RowConvForward& conv) {
  const int64_t halo = width - 1;
  if (!initial_states) {  // every sequence starts from zeros, which the seq_idx path already gives
    return {conv(x, seq_idx), last_inputs_of_sequences(x.select(0, 0), cu_seqlens.to(at::kLong), halo)};
  }
  const ExtendedRow r = extended_row(cu_seqlens, x.size(2), halo);
  const at::Tensor x_ext = extend(r, x, as_state_entries(*initial_states));
  const at::Tensor out = conv(x_ext, r.seq_idx).index_select(2, token_positions(seq_idx, halo));
  return {out, last_inputs_of_sequences(x_ext.select(0, 0), r.bounds, halo)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> per_sequence_conv_bwd(
    const at::Tensor& dout, const OptTensor& dfinal_states, const at::Tensor& x, const OptTensor& initial_states,
    const at::Tensor& cu_seqlens, const at::Tensor& seq_idx, int64_t width, const RowConvBackward& conv_bwd) {
  const int64_t halo = width - 1, n = cu_seqlens.size(0) - 1;
  const ExtendedRow r = extended_row(cu_seqlens, x.size(2), halo);
  const at::Tensor zero_entries = at::zeros({x.size(1), n * halo}, x.options());
  const at::Tensor x_ext = extend(r, x, initial_states ? as_state_entries(*initial_states) : zero_entries);
  // The state entries have no outputs, so no gradient arrives there; that also keeps them out of dweight
  // and dbias.
  const at::Tensor dout_ext = extend(r, dout, zero_entries);
  auto [dx_ext, dweight, dbias] = conv_bwd(dout_ext, x_ext, r.seq_idx);
  if (dfinal_states) dx_ext = dx_ext + final_states_on_row(r, *dfinal_states);
  const at::Tensor dx = dx_ext.index_select(2, token_positions(seq_idx, halo));
  const at::Tensor dinitial_states = as_states(dx_ext.select(0, 0).index_select(1, state_positions(r)), n, halo);
  return {dx, dweight, dbias, dinitial_states};
}

}  // namespace mamba_ext
