// Launch layout of the CUDA selective-scan kernels, shared by the kernels and the host code that sizes their
// grids and workspace (cuda_launch.h): block shape, time splits and the parts of the zero-start split pass.
// No torch headers, so these compile with plain nvcc (scripts/nvcc_check.sh).
//
// Thread layout (both directions). A block of kThreads threads covers R channels of one (batch, group)
// and one time split. Each channel is served by P consecutive lanes (P a power of two, 4 <= P <= 32, so
// R = kThreads / P <= 32) and each lane keeps K consecutive states n = p*K + k in fp32 registers; padded
// states (n >= N) have A = B = C = 0 and stay zero. All R channels share the (batch, group), so a time
// tile of input-dependent B and C is staged once in shared memory and read by every channel (mamba_ssm
// re-reads it from L2 once per channel).
// Time advances in tiles of kTile steps; the forward saves the state entering every tile (chunk_size ==
// kTile), which is exactly the backward's recompute window.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "selective_scan/params.h"

namespace mamba_ext::cuda {

constexpr int kThreads = 128;       // threads per block, both directions
constexpr int kTile = 32;           // time steps per tile == CUDA chunk_size (autograd.cpp: kCudaChunkSize)

struct ScanLayout {
  int K = 4;        // states per lane (a template parameter of the kernels: 4 for N <= 128, else 8)
  int P = 4;        // lanes per channel
  int R = 32;       // channels per block
  int n_pad = 16;   // P * K >= N
  int64_t n_cblocks = 1;  // channel blocks per group
  int64_t n_splits = 1, chunks_per_split = 1;  // time splits (separate blocks, combined by a small kernel)
  int64_t local_parts = 1;  // the zero-start pass runs each split as this many consecutive parts (blocks)
  bool vec_io = false;  // every row start is 16-byte aligned: loads and stores of 8 steps are single accesses
};

// Workspace of the split passes and of the backward's partial sums, all fp32, allocated by the host code.
struct ScanWork {
  float* split_local = nullptr;  // (batch, dim, S, parts, N): state (fwd) / adjoint (bwd) of a part run from zero
  float* split_in = nullptr;     // (batch, dim, S, N): true state entering / adjoint leaving each split
  float* split_dtsum = nullptr;  // (batch, dim, S, parts): sum of dt over a part (its decay is exp(A*sum))
  float* dA_part = nullptr;      // (batch, S, dim, N)
  float* dD_part = nullptr;      // (batch, S, dim)
  float* ddelta_bias_part = nullptr;  // (batch, S, dim)
  // Input-dependent: (batch, groups, n_cblocks, N, seqlen), one slice per channel block. Constant: (batch,
  // S, dim, N). Summed afterwards in a fixed order, so gradients are deterministic without atomics.
  float* dB_part = nullptr;
  float* dC_part = nullptr;
};

// (row, split, part) in split_dtsum, and times N in split_local: where the zero-start passes write a part's
// result and the chain kernels read it.
__host__ __device__ inline int64_t split_part_slot(const ScanLayout& l, int64_t row, int64_t split, int64_t part) {
  return (row * l.n_splits + split) * l.local_parts + part;
}

// blocks_per_sm: blocks of the kernel that fit on one multiprocessor. split_cost: the extra work of the
// zero-start pass a time split adds, relative to the kernel (0 = never split to balance waves).
inline ScanLayout make_layout(const SelectiveScanParams& p, int num_sms, int blocks_per_sm, double split_cost) {
  ScanLayout l;
  l.K = p.dstate <= 128 ? 4 : 8;
  l.P = 4;
  while (l.P * l.K < p.dstate) l.P *= 2;
  l.R = kThreads / l.P;
  l.n_pad = l.P * l.K;
  const int64_t channels = p.dim / p.n_groups;
  l.n_cblocks = (channels + l.R - 1) / l.R;
  const int64_t blocks = l.n_cblocks * p.batch * p.n_groups;
  const int64_t n_chunks = (p.seqlen + kTile - 1) / kTile;
  const int64_t slots = int64_t(num_sms) * blocks_per_sm;
  int64_t splits = 1;
  if (split_cost > 0) {
    // Time splits also even out waves: pick S minimizing rounds of `slots` blocks per unit of work plus
    // the split pass and a small per-split overhead, e.g. 512 blocks on 396 slots: S = 3 (4 rounds of a
    // third) beats 2 full rounds.
    // A split also costs a little on its own (setup, boundary states, partial sums): 1% of a pass each. (2%
    // chose 7 splits at (1, 1536, 131072), 336 blocks on 396 slots; 8 fill them.)
    constexpr double kPerSplit = 0.01;
    double best = double((blocks + slots - 1) / slots) + kPerSplit;
    for (int64_t S = 2; S <= 64 && S <= n_chunks; ++S) {
      const double cost = double((blocks * S + slots - 1) / slots) / double(S) + split_cost + kPerSplit * double(S);
      if (cost < best - 1e-9) {
        best = cost;
        splits = S;
      }
    }
  } else if (blocks < slots / 2) {
    // Too few rows to fill the GPU: a split costs a second pass of exps. Round down, so the blocks fit in one
    // wave (rounding up, 128 blocks on 528 slots made 5 splits, 640 blocks: a second, mostly empty round).
    splits = slots / blocks;
  }
  splits = splits > n_chunks ? (n_chunks < 1 ? 1 : n_chunks) : splits;
  l.chunks_per_split = n_chunks < 1 ? 1 : (n_chunks + splits - 1) / splits;
  l.n_splits = n_chunks < 1 ? 1 : (n_chunks + l.chunks_per_split - 1) / l.chunks_per_split;
  return l;
}

// Blocks per multiprocessor the zero-start split passes (fwd_kernel's kLocal, bwd_local_kernel) are compiled
// for: their registers are capped at 65536 / (kThreads * this). They need no outputs, so the common case
// (16-bit inputs, N <= 128, no per-sequence states) fits 64 registers without spills, fp32 80; the others
// keep 128. More resident blocks hide the latency of these short-lived passes.
constexpr int local_min_blocks(int input_bytes, int K, bool seq_states) {
  return (K != 4 || seq_states) ? 4 : (input_bytes == 2 ? 8 : 6);
}

// Parts per split of the zero-start pass: its S - 1 blocks per row block leave most slots of the GPU idle
// (e.g. (1, 1536, 131072) backward on an H100: 7 x 48 = 336 blocks, 2.5 per SM, where 8 fit), so each split
// is cut into consecutive parts, chained like splits (seventh session: that backward's split pass went from
// 1.89 to 1.24 ms with 3 parts, 1008 blocks). The count minimizes the pass's time in a wave model: rounds of
// `slots` blocks times a block's tiles plus one tile of start-up (its first loads are not overlapped).
// Filling one round only partly loses to several full ones: the forward at (1, 1536, 131072), 480 blocks
// on 1056 slots, took 2 parts (960 blocks, 91% of the slots, and 8 blocks on 36 SMs against 7 on the
// rest); 11 parts make 5 full rounds of 1056.
inline void set_local_parts(ScanLayout& l, const SelectiveScanParams& p, int num_sms, int input_bytes) {
  l.local_parts = 1;
  if (l.n_splits <= 1) return;
  const int64_t blocks = l.n_cblocks * p.batch * p.n_groups * (l.n_splits - 1);
  const int64_t slots = int64_t(num_sms) * local_min_blocks(input_bytes, l.K, p.per_sequence_states);
  constexpr int64_t kMaxParts = 32;  // bounds the chain kernels' serial walk (splits x parts steps)
  int64_t best_cost = -1;
  for (int64_t parts = 1; parts <= kMaxParts && parts <= l.chunks_per_split; ++parts) {
    const int64_t rounds = (blocks * parts + slots - 1) / slots;
    const int64_t cost = rounds * ((l.chunks_per_split + parts - 1) / parts + 1);
    if (best_cost < 0 || cost < best_cost) {
      best_cost = cost;
      l.local_parts = parts;
    }
  }
}

// Chunks [begin, end) of part `part` of `parts` of split `split` (parts = 1: the whole split). A trailing
// part may be empty; the zero-start pass then passes its input on unchanged (zero state, zero dt sum).
struct ChunkRange {
  int64_t begin, end;
};
__host__ __device__ inline ChunkRange split_part_chunks(const SelectiveScanParams& p, const ScanLayout& l,
                                                        int64_t split, int64_t part, int64_t parts) {
  const int64_t split_begin = split * l.chunks_per_split;
  const int64_t split_end = split_begin + l.chunks_per_split < p.n_chunks ? split_begin + l.chunks_per_split
                                                                          : p.n_chunks;
  const int64_t per_part = (l.chunks_per_split + parts - 1) / parts;
  const int64_t begin = split_begin + part * per_part < split_end ? split_begin + part * per_part : split_end;
  return {begin, begin + per_part < split_end ? begin + per_part : split_end};
}

}  // namespace mamba_ext::cuda
