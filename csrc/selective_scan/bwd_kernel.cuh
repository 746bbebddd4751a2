// CUDA backward of the selective scan: du, ddelta, dz, and per-block partial sums of dA, dB, dC, dD,
// ddelta_bias (summed afterwards in a fixed order: deterministic, no atomics), plus dinitial_state.
//
// Grid as the forward (scan_common.cuh): x = channel block of R channels, y = batch * groups + g, z = time
// split. A block walks its split's tiles (== saved chunks) from last to first, carrying the adjoint
// g = dL/dh in registers. Per tile: (1) stage dt, u, softplus', B, C; (2) recompute the states from the
// saved chunk state, keeping every h_t in shared memory, and y = C.h; (3) gate backward (dz, dy);
// (4) dC[n,t] = sum over the block's channels of dy*h_t, read from shared memory (no shuffles);
// (5) reverse scan; each lane overwrites its h_t with g_t; (6) dB[n,t] = sum over channels of g_t*dt*u,
// again from shared memory; du and ddelta are written coalesced.
// With S > 1 splits, bwd_local_kernel first runs each split but the first from a zero adjoint (it needs no
// states: g_t = C_t dy_t + exp(dt A) g_{t+1}), bwd_combine_kernel chains the splits from the end, and the
// full pass starts each split from the adjoint leaving the split after it.
//
// Instantiations: 3 input dtypes x K in {4, 8} x {full, local} = 12, plus 1 combine kernel.
#pragma once

#include "selective_scan/scan_common.cuh"

namespace mamba_ext::cuda {

template <typename input_t, int K>
__global__ void bwd_kernel(SelectiveScanParams p, ScanLayout l, ScanWork w) {
  extern __shared__ float smem[];
  const int RS = kRowStride, R = l.R;
  float* dt_s = smem;
  float* u_s = dt_s + R * RS;
  float* dsp_s = u_s + R * RS;     // softplus'(delta + bias), or 1
  float* dy_s = dsp_s + R * RS;    // y, then dL/dy (before the D and gate terms are split off)
  float* du_s = dy_s + R * RS;
  float* ddelta_s = du_s + R * RS;
  float* B_s = ddelta_s + R * RS;  // [n_pad][RS]
  float* C_s = B_s + l.n_pad * RS;
  float* hist = C_s + l.n_pad * RS;  // [K][threads][RS]: h_t, then g_t, of lane tid's state k

  const ThreadPos pos = thread_pos(p, l);
  const int tid = threadIdx.x;
  const int64_t split = blockIdx.z, N = p.dstate, L = p.seqlen;
  const int64_t row = pos.b * p.dim + pos.d;
  const float D = p.D_ptr ? static_cast<const float*>(p.D_ptr)[pos.d] : 0.f;

  float A[K], A2[K], g[K], dA[K], Bc[K], Cc[K], dBc[K], dCc[K];
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int n = pos.p + l.P * k;
    const bool real = n < N && pos.valid;
    A[k] = real ? static_cast<const float*>(p.A_ptr)[pos.d * N + n] : 0.f;
    A2[k] = A[k] * kLog2e;
    Bc[k] = (real && !p.is_variable_B) ? static_cast<const float*>(p.B_ptr)[pos.d * N + n] : 0.f;
    Cc[k] = (real && !p.is_variable_C) ? static_cast<const float*>(p.C_ptr)[pos.d * N + n] : 0.f;
    g[k] = 0.f;
    if (real) {
      if (split < l.n_splits - 1) {
        g[k] = w.split_in[(row * l.n_splits + split) * N + n];
      } else if (p.dlast_state_ptr) {
        g[k] = static_cast<const float*>(p.dlast_state_ptr)[row * N + n];
      }
    }
    dA[k] = dBc[k] = dCc[k] = 0.f;
  }
  float dD = 0.f, ddelta_bias = 0.f;
  const int64_t cb = blockIdx.x;
  const int64_t bc_part = ((pos.b * p.n_groups + pos.g) * l.n_cblocks + cb) * N * L;

  const int64_t chunk_begin = split * l.chunks_per_split;
  const int64_t chunk_end = min(p.n_chunks, chunk_begin + l.chunks_per_split);
  for (int64_t chunk = chunk_end - 1; chunk >= chunk_begin; --chunk) {
    const int64_t t0 = chunk * kTile;
    const int len = tile_len(L, t0);
    load_dt_u<input_t>(p, l, pos.b, t0, len, dt_s, u_s, dsp_s);
    if (p.is_variable_B) load_bc<input_t>(p.B_ptr, p.B_batch_stride, p.B_group_stride, p.B_dstate_stride, p, l, pos.b, pos.g, t0, len, B_s);
    if (p.is_variable_C) load_bc<input_t>(p.C_ptr, p.C_batch_stride, p.C_group_stride, p.C_dstate_stride, p, l, pos.b, pos.g, t0, len, C_s);
    float h[K];
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int n = pos.p + l.P * k;
      h[k] = (pos.valid && n < N) ? static_cast<const float*>(p.chunk_states_ptr)[(row * p.n_chunks + chunk) * N + n] : 0.f;
    }
    __syncthreads();

    // (2) Recompute the tile's states.
    const float* dt_row = dt_s + pos.c * RS;
    const float* u_row = u_s + pos.c * RS;
#pragma unroll 2
    for (int t = 0; t < kTile; ++t) {
      const float dt = dt_row[t], dtu = dt * u_row[t];
      float y = 0.f;
#pragma unroll
      for (int k = 0; k < K; ++k) {
        const int n = pos.p + l.P * k;
        const float Bv = p.is_variable_B ? B_s[n * RS + t] : Bc[k];
        h[k] = fmaf(ex2(dt * A2[k]), h[k], dtu * Bv);
        hist[(k * l.threads + tid) * RS + t] = h[k];
        y = fmaf(p.is_variable_C ? C_s[n * RS + t] : Cc[k], h[k], y);
      }
      y = channel_sum(y, l.P);
      if (pos.p == 0) dy_s[pos.c * RS + t] = y;
    }
    __syncthreads();

    // (3) Gate backward: dy = dout * silu(z), dz = dout * y * silu'(z), with y including D u.
    for (int e = tid; e < R * kTile; e += l.threads) {
      const int c = e / kTile, t = e % kTile;
      const int64_t d = block_channel(p, l, c);
      float dy = 0.f;
      if (d >= 0 && t < len) {
        const int64_t tt = t0 + t;
        dy = to_float(static_cast<const input_t*>(p.dout_ptr)[pos.b * p.dout_batch_stride + d * p.dout_dim_stride + tt]);
        if (p.z_ptr) {
          const float Dd = p.D_ptr ? static_cast<const float*>(p.D_ptr)[d] : 0.f;
          const float y = dy_s[c * RS + t] + Dd * u_s[c * RS + t];
          const float z = to_float(static_cast<const input_t*>(p.z_ptr)[pos.b * p.z_batch_stride + d * p.z_dim_stride + tt]);
          const float sg = sigmoid(z);
          static_cast<input_t*>(p.dz_ptr)[(pos.b * p.dim + d) * L + tt] = from_float<input_t>(dy * y * sg * (1.f + z * (1.f - sg)));
          dy *= z * sg;
        }
      }
      dy_s[c * RS + t] = dy;
    }
    __syncthreads();

    // (4) dC[n, t] = sum_c dy[c, t] h_t[c, n], one (n, t) per thread, consecutive threads on consecutive t.
    if (p.is_variable_C) {
      for (int e = tid; e < l.n_pad * kTile; e += l.threads) {
        const int n = e / kTile, t = e % kTile;
        if (n >= N || t >= len) continue;
        const float* hrow = hist + ((n / l.P) * l.threads + (n % l.P)) * RS + t;
        float acc = 0.f;
        for (int c = 0; c < R; ++c) acc = fmaf(hrow[c * l.P * RS], dy_s[c * RS + t], acc);
        w.dC_part[bc_part + n * L + t0 + t] = acc;
      }
      __syncthreads();  // (5) overwrites hist
    }

    // (5) Reverse scan over the tile.
    const float* dy_row = dy_s + pos.c * RS;
#pragma unroll 2
    for (int t = kTile - 1; t >= 0; --t) {
      const float dt = dt_row[t], u = u_row[t], dtu = dt * u, dy = dy_row[t];
      float s1 = 0.f, s2 = 0.f;  // sum_n dL/d(dt A_n) A_n and sum_n dL/dh_n B_n
#pragma unroll
      for (int k = 0; k < K; ++k) {
        const int n = pos.p + l.P * k;
        const float Bv = p.is_variable_B ? B_s[n * RS + t] : Bc[k];
        const float Cv = p.is_variable_C ? C_s[n * RS + t] : Cc[k];
        float* hp = hist + (k * l.threads + tid) * RS + t;
        const float ht = *hp;
        const float gk = fmaf(Cv, dy, g[k]);      // dL/dh_t
        const float ga = gk * (ht - dtu * Bv);    // dL/d(dt A_n) = g a_t h_{t-1}
        dA[k] = fmaf(ga, dt, dA[k]);
        s1 = fmaf(ga, A[k], s1);
        s2 = fmaf(gk, Bv, s2);
        dCc[k] = fmaf(dy, ht, dCc[k]);
        dBc[k] = fmaf(gk, dtu, dBc[k]);
        *hp = gk;
        g[k] = ex2(dt * A2[k]) * gk;
      }
      s1 = channel_sum(s1, l.P);
      s2 = channel_sum(s2, l.P);
      if (pos.p == 0) {
        const float ddelta = (s1 + s2 * u) * dsp_s[pos.c * RS + t];
        du_s[pos.c * RS + t] = fmaf(s2, dt, D * dy);
        ddelta_s[pos.c * RS + t] = ddelta;
        if (t < len) {
          dD = fmaf(dy, u, dD);
          ddelta_bias += ddelta;
        }
      }
    }
    __syncthreads();

    // (6) dB[n, t] = sum_c g_t[c, n] dt[c, t] u[c, t]; then du and ddelta.
    if (p.is_variable_B) {
      for (int e = tid; e < l.n_pad * kTile; e += l.threads) {
        const int n = e / kTile, t = e % kTile;
        if (n >= N || t >= len) continue;
        const float* grow = hist + ((n / l.P) * l.threads + (n % l.P)) * RS + t;
        float acc = 0.f;
        for (int c = 0; c < R; ++c) acc = fmaf(grow[c * l.P * RS], dt_s[c * RS + t] * u_s[c * RS + t], acc);
        w.dB_part[bc_part + n * L + t0 + t] = acc;
      }
    }
    for (int e = tid; e < R * kTile; e += l.threads) {
      const int c = e / kTile, t = e % kTile;
      const int64_t d = block_channel(p, l, c);
      if (d < 0 || t >= len) continue;
      const int64_t at = (pos.b * p.dim + d) * L + t0 + t;
      static_cast<input_t*>(p.du_ptr)[at] = from_float<input_t>(du_s[c * RS + t]);
      static_cast<input_t*>(p.ddelta_ptr)[at] = from_float<input_t>(ddelta_s[c * RS + t]);
    }
    __syncthreads();
  }

  if (!pos.valid) return;
  const int64_t part = (pos.b * l.n_splits + split) * p.dim + pos.d;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int n = pos.p + l.P * k;
    if (n >= N) continue;
    w.dA_part[part * N + n] = dA[k];
    if (!p.is_variable_B) w.dB_part[part * N + n] = dBc[k];
    if (!p.is_variable_C) w.dC_part[part * N + n] = dCc[k];
    if (split == 0) static_cast<float*>(p.dinitial_state_ptr)[row * N + n] = g[k];
  }
  if (pos.p == 0) {
    w.dD_part[part] = dD;
    w.ddelta_bias_part[part] = ddelta_bias;
  }
}

// Zero-start adjoint of split blockIdx.z + 1 (every split but the first): what it passes to the split before
// it when nothing flows in from the right. Needs no states, so no recompute.
template <typename input_t, int K>
__global__ void bwd_local_kernel(SelectiveScanParams p, ScanLayout l, ScanWork w) {
  extern __shared__ float smem[];
  const int RS = kRowStride, R = l.R;
  float* dt_s = smem;
  float* u_s = dt_s + R * RS;
  float* dy_s = u_s + R * RS;
  float* C_s = dy_s + R * RS;

  const ThreadPos pos = thread_pos(p, l);
  const int64_t split = blockIdx.z + 1, N = p.dstate;
  const int64_t row = pos.b * p.dim + pos.d;
  float A2[K], Cc[K], g[K];
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int n = pos.p + l.P * k;
    const bool real = n < N && pos.valid;
    A2[k] = real ? static_cast<const float*>(p.A_ptr)[pos.d * N + n] * kLog2e : 0.f;
    Cc[k] = (real && !p.is_variable_C) ? static_cast<const float*>(p.C_ptr)[pos.d * N + n] : 0.f;
    g[k] = 0.f;
  }
  float dtsum = 0.f;
  const int64_t chunk_begin = split * l.chunks_per_split;
  const int64_t chunk_end = min(p.n_chunks, chunk_begin + l.chunks_per_split);
  for (int64_t chunk = chunk_end - 1; chunk >= chunk_begin; --chunk) {
    const int64_t t0 = chunk * kTile;
    const int len = tile_len(p.seqlen, t0);
    load_dt_u<input_t>(p, l, pos.b, t0, len, dt_s, u_s, nullptr);
    if (p.is_variable_C) load_bc<input_t>(p.C_ptr, p.C_batch_stride, p.C_group_stride, p.C_dstate_stride, p, l, pos.b, pos.g, t0, len, C_s);
    for (int e = threadIdx.x; e < R * kTile; e += l.threads) {
      const int c = e / kTile, t = e % kTile;
      const int64_t d = block_channel(p, l, c);
      float dy = 0.f;
      if (d >= 0 && t < len) {
        const int64_t tt = t0 + t;
        dy = to_float(static_cast<const input_t*>(p.dout_ptr)[pos.b * p.dout_batch_stride + d * p.dout_dim_stride + tt]);
        if (p.z_ptr) {
          const float z = to_float(static_cast<const input_t*>(p.z_ptr)[pos.b * p.z_batch_stride + d * p.z_dim_stride + tt]);
          dy *= z * sigmoid(z);
        }
      }
      dy_s[c * RS + t] = dy;
    }
    __syncthreads();
    for (int t = kTile - 1; t >= 0; --t) {
      const float dt = dt_s[pos.c * RS + t], dy = dy_s[pos.c * RS + t];
      dtsum += dt;
#pragma unroll
      for (int k = 0; k < K; ++k) {
        const int n = pos.p + l.P * k;
        const float Cv = p.is_variable_C ? C_s[n * RS + t] : Cc[k];
        g[k] = ex2(dt * A2[k]) * fmaf(Cv, dy, g[k]);
      }
    }
    __syncthreads();
  }
  if (!pos.valid) return;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int n = pos.p + l.P * k;
    if (n < N) w.split_local[(row * l.n_splits + split) * N + n] = g[k];
  }
  if (pos.p == 0) w.split_dtsum[row * l.n_splits + split] = dtsum;
}

// Adjoint leaving each split to the left: q_{S-1} = dlast_state, q_{s-1} = local_s + exp(A sum dt_s) q_s.
__global__ void bwd_combine_kernel(SelectiveScanParams p, ScanLayout l, ScanWork w) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t N = p.dstate;
  if (i >= p.batch * p.dim * N) return;
  const int64_t row = i / N, n = i % N, d = row % p.dim;
  const float A2 = static_cast<const float*>(p.A_ptr)[d * N + n] * kLog2e;
  float q = p.dlast_state_ptr ? static_cast<const float*>(p.dlast_state_ptr)[i] : 0.f;
  for (int64_t s = l.n_splits - 1; s >= 0; --s) {
    const int64_t at = (row * l.n_splits + s) * N + n;
    w.split_in[at] = q;
    if (s > 0) q = w.split_local[at] + ex2(A2 * w.split_dtsum[row * l.n_splits + s]) * q;
  }
}

inline size_t bwd_smem_bytes(const ScanLayout& l) {
  return sizeof(float) * (6 * l.R + 2 * l.n_pad + size_t(l.K) * l.threads) * kRowStride;
}

template <typename input_t, int K>
cudaError_t launch_bwd_k(const SelectiveScanParams& p, const ScanLayout& l, const ScanWork& w, cudaStream_t stream) {
  const size_t smem = bwd_smem_bytes(l);
  const size_t local_smem = sizeof(float) * (3 * l.R + l.n_pad) * kRowStride;
  cudaError_t err = cudaFuncSetAttribute(bwd_kernel<input_t, K>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (err != cudaSuccess) return err;
  const unsigned gy = unsigned(p.batch * p.n_groups);
  if (l.n_splits > 1) {
    err = cudaFuncSetAttribute(bwd_local_kernel<input_t, K>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(local_smem));
    if (err != cudaSuccess) return err;
    const dim3 grid(unsigned(l.n_cblocks), gy, unsigned(l.n_splits - 1));
    bwd_local_kernel<input_t, K><<<grid, l.threads, local_smem, stream>>>(p, l, w);
    const int64_t total = p.batch * p.dim * p.dstate;
    bwd_combine_kernel<<<unsigned((total + 255) / 256), 256, 0, stream>>>(p, l, w);
  }
  bwd_kernel<input_t, K><<<dim3(unsigned(l.n_cblocks), gy, unsigned(l.n_splits)), l.threads, smem, stream>>>(p, l, w);
  return cudaGetLastError();
}

// Entry point for one input dtype: 2 (K) x 2 (full, local) instantiations.
template <typename input_t>
cudaError_t launch_selective_scan_bwd(const SelectiveScanParams& p, const ScanLayout& l, const ScanWork& w,
                                      cudaStream_t stream) {
  return l.K == 4 ? launch_bwd_k<input_t, 4>(p, l, w, stream) : launch_bwd_k<input_t, 8>(p, l, w, stream);
}

}  // namespace mamba_ext::cuda
