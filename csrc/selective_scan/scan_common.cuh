// Pieces shared by the CUDA forward and backward selective-scan kernels (fwd_kernel.cuh, bwd_kernel.cuh):
// the thread layout, the workspace, dtype conversions and fast special functions. No torch headers, so
// these compile with plain nvcc (scripts/nvcc_check.sh).
//
// Thread layout (both directions). A block covers R channels of one (batch, group) and one time split.
// Each channel is served by P consecutive lanes (P a power of two <= 32) and each lane keeps K states
// (n = p + P*k, k < K) in fp32 registers, so N <= P*K = n_pad; padded states have A = B = C = 0 and stay
// zero. Because all R channels share the (batch, group), a time tile of input-dependent B and C is staged
// once in shared memory and read by every channel (mamba_ssm re-reads it from L2 once per channel).
// Time advances in tiles of kTile steps; the forward saves the state entering every tile (chunk_size ==
// kTile), which is exactly the backward's recompute window.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "selective_scan/params.h"

namespace mamba_ext::cuda {

constexpr int kTile = 32;            // time steps per tile == CUDA chunk_size (autograd.cpp: kCudaChunkSize)
constexpr int kRowStride = kTile + 1;  // shared-memory row pitch: odd, so rows of consecutive lanes differ in bank
constexpr float kLog2e = 1.4426950408889634f;

struct ScanLayout {
  int K = 4;        // states per lane (a template parameter of the kernels: 4 for N <= 128, else 8)
  int P = 1;        // lanes per channel
  int R = 32;       // channels per block
  int threads = 32; // R * P
  int n_pad = 4;    // P * K >= N
  int64_t n_cblocks = 1;  // channel blocks per group
  int64_t n_splits = 1, chunks_per_split = 1;  // time splits (separate blocks, combined by a small kernel)
};

// Workspace of the split passes and of the backward's partial sums, all fp32, allocated by the host code.
struct ScanWork {
  float* split_local = nullptr;  // (batch, dim, S, N): state (fwd) / adjoint (bwd) of a split run from zero
  float* split_in = nullptr;     // (batch, dim, S, N): true state entering / adjoint leaving each split
  float* split_dtsum = nullptr;  // (batch, dim, S): sum of dt over the split (its total decay is exp(A*sum))
  float* dA_part = nullptr;      // (batch, S, dim, N)
  float* dD_part = nullptr;      // (batch, S, dim)
  float* ddelta_bias_part = nullptr;  // (batch, S, dim)
  // Input-dependent: (batch, groups, n_cblocks, N, seqlen), one slice per channel block. Constant: (batch,
  // S, dim, N). Summed afterwards in a fixed order, so gradients are deterministic without atomics.
  float* dB_part = nullptr;
  float* dC_part = nullptr;
};

inline ScanLayout make_layout(const SelectiveScanParams& p, int num_sms, int blocks_per_sm) {
  ScanLayout l;
  l.K = p.dstate <= 128 ? 4 : 8;
  l.P = 1;
  while (l.P * l.K < p.dstate) l.P *= 2;
  l.R = l.P <= 4 ? 32 : 128 / l.P;
  l.threads = l.R * l.P;
  l.n_pad = l.P * l.K;
  const int64_t channels = p.dim / p.n_groups;
  l.n_cblocks = (channels + l.R - 1) / l.R;
  // Split time only when the rows alone cannot fill the GPU: a split costs a second pass of exps.
  const int64_t blocks = l.n_cblocks * p.batch * p.n_groups;
  const int64_t n_chunks = (p.seqlen + kTile - 1) / kTile;
  const int64_t want = int64_t(num_sms) * blocks_per_sm;
  int64_t splits = blocks >= want / 2 ? 1 : (want + blocks - 1) / blocks;
  splits = splits < 1 ? 1 : (splits > n_chunks ? (n_chunks < 1 ? 1 : n_chunks) : splits);
  l.chunks_per_split = n_chunks < 1 ? 1 : (n_chunks + splits - 1) / splits;
  l.n_splits = n_chunks < 1 ? 1 : (n_chunks + l.chunks_per_split - 1) / l.chunks_per_split;
  return l;
}

// Where a thread sits: its channel d, whether the channel exists, and its lane p within the channel.
struct ThreadPos {
  int c, p;                 // channel within the block, lane within the channel
  int64_t b, g, d;          // batch, group, global channel (clamped to a real one when !valid)
  bool valid;
};

__device__ __forceinline__ ThreadPos thread_pos(const SelectiveScanParams& p, const ScanLayout& l) {
  ThreadPos t;
  t.c = threadIdx.x / l.P;
  t.p = threadIdx.x % l.P;
  t.b = blockIdx.y / p.n_groups;
  t.g = blockIdx.y % p.n_groups;
  const int64_t channels = p.dim / p.n_groups;
  const int64_t local = int64_t(blockIdx.x) * l.R + t.c;
  t.valid = local < channels;
  t.d = t.g * channels + (t.valid ? local : channels - 1);
  return t;
}

// Global channel of block-local channel c, or -1 when the block runs past its group.
__device__ __forceinline__ int64_t block_channel(const SelectiveScanParams& p, const ScanLayout& l, int c) {
  const int64_t channels = p.dim / p.n_groups;
  const int64_t local = int64_t(blockIdx.x) * l.R + c;
  return local < channels ? (blockIdx.y % p.n_groups) * channels + local : -1;
}

// Steps of the tile starting at t0 that lie inside the sequence.
__device__ __forceinline__ int tile_len(int64_t seqlen, int64_t t0) {
  return seqlen - t0 < kTile ? int(seqlen - t0) : kTile;
}

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// 2^x on the special-function unit (one MUFU op; relative error ~2^-22). A is pre-scaled by log2(e), so
// exp(dt * A) costs one multiply and this.
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// softplus(x) = log(1 + e^x), identity above 20 as in the reference; log1pf keeps small values accurate.
__device__ __forceinline__ float softplus(float x) { return x <= 20.f ? log1pf(ex2(x * kLog2e)) : x; }

__device__ __forceinline__ float sigmoid(float x) { return __fdividef(1.f, 1.f + ex2(-x * kLog2e)); }

// Sum over the P lanes of a channel (P consecutive lanes, P a power of two).
__device__ __forceinline__ float channel_sum(float v, int P) {
  for (int off = 1; off < P; off <<= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// dt and u of one tile for the block's channels into shared memory ([c][t], pitch kRowStride); steps past
// the sequence get dt = u = 0, which leaves the state unchanged. Optionally also softplus'(x) = sigmoid(x).
template <typename input_t>
__device__ __forceinline__ void load_dt_u(const SelectiveScanParams& p, const ScanLayout& l, int64_t b,
                                          int64_t t0, int len, float* dt_s, float* u_s, float* dsp_s) {
  for (int e = threadIdx.x; e < l.R * kTile; e += l.threads) {
    const int c = e / kTile, t = e % kTile;
    const int64_t d = block_channel(p, l, c);
    float dt = 0.f, u = 0.f, dsp = 0.f;
    if (d >= 0 && t < len) {
      const int64_t tt = t0 + t;
      u = to_float(static_cast<const input_t*>(p.u_ptr)[b * p.u_batch_stride + d * p.u_dim_stride + tt]);
      float x = to_float(static_cast<const input_t*>(p.delta_ptr)[b * p.delta_batch_stride + d * p.delta_dim_stride + tt]);
      if (p.delta_bias_ptr) x += static_cast<const float*>(p.delta_bias_ptr)[d];
      dt = x;
      dsp = 1.f;
      if (p.delta_softplus) {
        dt = softplus(x);
        dsp = x <= 20.f ? sigmoid(x) : 1.f;
      }
    }
    dt_s[c * kRowStride + t] = dt;
    u_s[c * kRowStride + t] = u;
    if (dsp_s) dsp_s[c * kRowStride + t] = dsp;
  }
}

// One tile of input-dependent B or C of the block's (batch, group) into shared memory ([n][t], pitch
// kRowStride), zero past N and past the sequence.
template <typename input_t>
__device__ __forceinline__ void load_bc(const void* src_ptr, int64_t batch_stride, int64_t group_stride,
                                        int64_t dstate_stride, const SelectiveScanParams& p,
                                        const ScanLayout& l, int64_t b, int64_t g, int64_t t0, int len,
                                        float* dst) {
  const input_t* src = static_cast<const input_t*>(src_ptr) + b * batch_stride + g * group_stride + t0;
  for (int e = threadIdx.x; e < l.n_pad * kTile; e += l.threads) {
    const int n = e / kTile, t = e % kTile;
    dst[n * kRowStride + t] = (n < p.dstate && t < len) ? to_float(src[n * dstate_stride + t]) : 0.f;
  }
}

}  // namespace mamba_ext::cuda
