// CUDA forward of the selective scan: out = (sum_n C h + D u) * silu(z), the last state, and the state
// entering every kTile-step chunk (chunk_states, what the backward recomputes from). u, delta, z, B, C are
// read once; dt, the scan and the gate stay on chip in fp32; (batch, dim, seqlen, N) is never stored.
//
// Grid: x = channel block within the group (R channels, layout in scan_common.cuh), y = batch * groups + g,
// z = time split. Each block walks its split tile by tile: (1) stage dt, u and B/C of the tile in shared
// memory, (2) every lane advances its K states through the tile (one exp2 per state and step), the P lanes
// of a channel sum C*h with shuffles, (3) the block writes the gated output coalesced.
// With one split the kernel runs once. With S > 1 splits (few rows, long sequences) a first pass runs each
// split from a zero state (kLocal: no output, only its end state and sum of dt), combine_splits chains them
// (a split's total decay is exp(A * sum dt)), and the full pass starts each split from its true state.
//
// Instantiations: 3 input dtypes (fp32, fp16, bf16) x K in {4, 8} x kLocal = 12 of the scan kernel, 1 combine.
#pragma once

#include "selective_scan/scan_common.cuh"

namespace mamba_ext::cuda {

template <typename input_t, int K, bool kLocal>
__global__ void fwd_kernel(SelectiveScanParams p, ScanLayout l, ScanWork w) {
  extern __shared__ float smem[];
  float* dt_s = smem;                     // [R][kRowStride]
  float* u_s = dt_s + l.R * kRowStride;   // [R][kRowStride]
  float* y_s = u_s + l.R * kRowStride;    // [R][kRowStride]
  float* B_s = y_s + l.R * kRowStride;    // [n_pad][kRowStride]
  float* C_s = B_s + l.n_pad * kRowStride;

  const ThreadPos pos = thread_pos(p, l);
  const int64_t split = blockIdx.z, N = p.dstate;
  const int64_t row = pos.b * p.dim + pos.d;  // (batch, channel) row of the state tensors

  float A2[K], h[K], Bc[K], Cc[K];
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int n = pos.p + l.P * k;
    const bool real = n < N;
    A2[k] = real ? static_cast<const float*>(p.A_ptr)[pos.d * N + n] * kLog2e : 0.f;
    Bc[k] = (real && !p.is_variable_B) ? static_cast<const float*>(p.B_ptr)[pos.d * N + n] : 0.f;
    Cc[k] = (real && !p.is_variable_C) ? static_cast<const float*>(p.C_ptr)[pos.d * N + n] : 0.f;
    h[k] = 0.f;
    if (!kLocal && real) {
      if (split > 0) {
        h[k] = w.split_in[(row * l.n_splits + split) * N + n];
      } else if (p.initial_state_ptr) {
        h[k] = static_cast<const float*>(p.initial_state_ptr)[row * N + n];
      }
    }
  }

  float dtsum = 0.f;
  const int64_t chunk_begin = split * l.chunks_per_split;
  const int64_t chunk_end = min(p.n_chunks, chunk_begin + l.chunks_per_split);
  for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
    const int64_t t0 = chunk * kTile;
    const int len = tile_len(p.seqlen, t0);
    if (!kLocal && pos.valid) {
      float* dst = static_cast<float*>(p.chunk_states_ptr) + (row * p.n_chunks + chunk) * N;
#pragma unroll
      for (int k = 0; k < K; ++k) {
        const int n = pos.p + l.P * k;
        if (n < N) dst[n] = h[k];
      }
    }
    load_dt_u<input_t>(p, l, pos.b, t0, len, dt_s, u_s, nullptr);
    if (p.is_variable_B) {
      load_bc<input_t>(p.B_ptr, p.B_batch_stride, p.B_group_stride, p.B_dstate_stride, p, l, pos.b, pos.g, t0,
                       len, B_s);
    }
    if (!kLocal && p.is_variable_C) {
      load_bc<input_t>(p.C_ptr, p.C_batch_stride, p.C_group_stride, p.C_dstate_stride, p, l, pos.b, pos.g, t0,
                       len, C_s);
    }
    __syncthreads();

    const float* dt_row = dt_s + pos.c * kRowStride;
    const float* u_row = u_s + pos.c * kRowStride;
#pragma unroll 4
    for (int t = 0; t < kTile; ++t) {
      const float dt = dt_row[t], dtu = dt * u_row[t];
      dtsum += dt;
      float y = 0.f;
#pragma unroll
      for (int k = 0; k < K; ++k) {
        const int n = pos.p + l.P * k;
        const float Bv = p.is_variable_B ? B_s[n * kRowStride + t] : Bc[k];
        h[k] = fmaf(ex2(dt * A2[k]), h[k], dtu * Bv);
        if (!kLocal) y = fmaf(p.is_variable_C ? C_s[n * kRowStride + t] : Cc[k], h[k], y);
      }
      if (!kLocal) {
        y = channel_sum(y, l.P);
        if (pos.p == 0) y_s[pos.c * kRowStride + t] = y;
      }
    }
    __syncthreads();

    if (!kLocal) {
      // Gate and store, consecutive threads on consecutive time steps of a channel.
      for (int e = threadIdx.x; e < l.R * kTile; e += l.threads) {
        const int c = e / kTile, t = e % kTile;
        const int64_t d = block_channel(p, l, c);
        if (d < 0 || t >= len) continue;
        const int64_t tt = t0 + t;
        float v = y_s[c * kRowStride + t];
        if (p.D_ptr) v += static_cast<const float*>(p.D_ptr)[d] * u_s[c * kRowStride + t];
        if (p.z_ptr) {
          const float z = to_float(static_cast<const input_t*>(p.z_ptr)[pos.b * p.z_batch_stride + d * p.z_dim_stride + tt]);
          v *= z * sigmoid(z);
        }
        static_cast<input_t*>(p.out_ptr)[pos.b * p.out_batch_stride + d * p.out_dim_stride + tt] = from_float<input_t>(v);
      }
      __syncthreads();  // the next tile's loads overwrite u_s and y_s
    }
  }

  if (!pos.valid) return;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int n = pos.p + l.P * k;
    if (n >= N) continue;
    if (kLocal) {
      w.split_local[(row * l.n_splits + split) * N + n] = h[k];
    } else if (split == l.n_splits - 1) {
      static_cast<float*>(p.last_state_ptr)[row * N + n] = h[k];
    }
  }
  if (kLocal && pos.p == 0) w.split_dtsum[row * l.n_splits + split] = dtsum;
}

// Chains the splits: the state entering split s is the state entering split s-1 decayed by exp(A * sum dt)
// of split s-1 plus that split's zero-start end state. One thread per (batch, channel, state).
__global__ void fwd_combine_kernel(SelectiveScanParams p, ScanLayout l, ScanWork w) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t N = p.dstate;
  if (i >= p.batch * p.dim * N) return;
  const int64_t row = i / N, n = i % N, d = row % p.dim;
  const float A2 = static_cast<const float*>(p.A_ptr)[d * N + n] * kLog2e;
  float h = p.initial_state_ptr ? static_cast<const float*>(p.initial_state_ptr)[i] : 0.f;
  for (int64_t s = 0; s < l.n_splits; ++s) {
    const int64_t at = (row * l.n_splits + s) * N + n;
    w.split_in[at] = h;
    h = ex2(A2 * w.split_dtsum[row * l.n_splits + s]) * h + w.split_local[at];
  }
}

template <typename input_t, int K>
cudaError_t launch_fwd_k(const SelectiveScanParams& p, const ScanLayout& l, const ScanWork& w, cudaStream_t stream) {
  const size_t smem = sizeof(float) * (3 * l.R + 2 * l.n_pad) * kRowStride;
  const dim3 grid(unsigned(l.n_cblocks), unsigned(p.batch * p.n_groups), unsigned(l.n_splits));
  // 2 instantiations here (kLocal), per input dtype and K.
  for (auto kernel : {fwd_kernel<input_t, K, true>, fwd_kernel<input_t, K, false>}) {
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (err != cudaSuccess) return err;
  }
  if (l.n_splits > 1) {
    fwd_kernel<input_t, K, true><<<grid, l.threads, smem, stream>>>(p, l, w);
    const int64_t total = p.batch * p.dim * p.dstate;
    fwd_combine_kernel<<<unsigned((total + 255) / 256), 256, 0, stream>>>(p, l, w);
  }
  fwd_kernel<input_t, K, false><<<grid, l.threads, smem, stream>>>(p, l, w);
  return cudaGetLastError();
}

// Entry point for one input dtype: 2 (K) x 2 (kLocal) scan instantiations.
template <typename input_t>
cudaError_t launch_selective_scan_fwd(const SelectiveScanParams& p, const ScanLayout& l, const ScanWork& w,
                                      cudaStream_t stream) {
  return l.K == 4 ? launch_fwd_k<input_t, 4>(p, l, w, stream) : launch_fwd_k<input_t, 8>(p, l, w, stream);
}

}  // namespace mamba_ext::cuda
