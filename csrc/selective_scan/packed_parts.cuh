// Packed rows (seq_idx, or cu_seqlens' per-sequence states) in the zero-start split passes (fwd_kernel's
// kLocal, bwd_local_kernel): the steps of a part that can change what the chain makes of it.
// A sequence start drops everything carried into it: the forward's state, and the backward's adjoint flowing
// out of it to the left. So:
// - forward: a part's end state depends only on its steps from its last start on. If a later part of the
//   same split holds a start, that start drops whatever this part passes on, so it scans nothing;
// - backward (right to left): a part's adjoint at its first step depends only on its steps up to its first
//   start. If an earlier part of the split holds a start, this part scans nothing.
// The result is bitwise the same as scanning every step (for finite states). A part that scans nothing
// passes on a zero state with a zero dt sum (decay 1), and the chain then meets the start's part, whose
// decay is 0 (a cut), so that part's result replaces what came before. A part cut short still holds its
// start, so its tile sets the state exactly as before (checked: scripts/gpu_ab_bitwise.sh, eighth session).
// On packed rows with sequences about as long as a split, the backward's split pass shrinks to a tile per
// split, and the forward's to the last sequence of each split.
#pragma once

#include <cstdint>

#include "selective_scan/params.h"
#include "selective_scan/scan_layout.cuh"

namespace mamba_ext::cuda {

// The first (kFirst) or the last sequence start among steps [begin, end) of batch row b, or -1 if there is
// none. A start is marked as stage_sequence_cuts marks it: the id changes from the step before, or token 0
// with per-sequence states. Every thread of the block must call it (it synchronizes), and all of them get the
// answer. The loop is unrolled so that a thread's loads are in flight together: a split of 12K steps costs a
// few memory latencies.
template <bool kFirst>
__device__ int64_t find_sequence_start(const SelectiveScanParams& p, int64_t b, int64_t begin, int64_t end) {
  constexpr unsigned long long kNone = ~0ull;  // for kFirst; the last start is kept as t + 1, so none is 0
  __shared__ unsigned long long found_s;
  if (threadIdx.x == 0) found_s = kFirst ? kNone : 0ull;
  __syncthreads();
  const int32_t* seq = p.seq_idx_ptr + b * p.seqlen;
  unsigned long long mine = kFirst ? kNone : 0ull;
#pragma unroll 4
  for (int64_t t = begin + threadIdx.x; t < end; t += blockDim.x) {
    const bool start = t > 0 ? seq[t] != seq[t - 1] : p.per_sequence_states;
    if (start) {
      const unsigned long long at = kFirst ? (unsigned long long)t : (unsigned long long)t + 1;
      mine = kFirst ? (at < mine ? at : mine) : (at > mine ? at : mine);
    }
  }
  if (kFirst ? mine != kNone : mine != 0ull) {
    if (kFirst) atomicMin(&found_s, mine); else atomicMax(&found_s, mine);
  }
  __syncthreads();
  const unsigned long long found = found_s;
  if (kFirst) return found == kNone ? -1 : int64_t(found);
  return found == 0ull ? -1 : int64_t(found) - 1;
}

__device__ __forceinline__ int64_t steps_end(const SelectiveScanParams& p, int64_t chunk_end) {
  return chunk_end * kTile < p.seqlen ? chunk_end * kTile : p.seqlen;
}

// Forward: the chunks of part `part` (chunks of split `split`) that its zero-start scan needs.
__device__ __forceinline__ ChunkRange forward_part_chunks(const SelectiveScanParams& p, const ScanLayout& l, int64_t b,
                                                          int64_t split, ChunkRange part) {
  if (!p.seq_idx_ptr) return part;
  const ChunkRange whole = split_part_chunks(p, l, split, 0, 1);
  const int64_t last = find_sequence_start<false>(p, b, part.begin * kTile, steps_end(p, whole.end));
  if (last < 0) return part;
  if (last >= part.end * kTile) return {part.end, part.end};  // a later part's start drops this part's result
  return {last / kTile, part.end};                              // from the tile of the part's last start
}

// Backward: the chunks of part `part` (chunks of split `split`) that its zero-start adjoint pass needs.
__device__ __forceinline__ ChunkRange backward_part_chunks(const SelectiveScanParams& p, const ScanLayout& l, int64_t b,
                                                           int64_t split, ChunkRange part) {
  if (!p.seq_idx_ptr) return part;
  const ChunkRange whole = split_part_chunks(p, l, split, 0, 1);
  const int64_t first = find_sequence_start<true>(p, b, whole.begin * kTile, steps_end(p, part.end));
  if (first < 0) return part;
  if (first < part.begin * kTile) return {part.begin, part.begin};  // an earlier part's start drops this one's
  return {part.begin, first / kTile + 1};                             // up to the tile of the part's first start
}

}  // namespace mamba_ext::cuda
