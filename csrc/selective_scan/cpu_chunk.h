// Inner loops of the CPU selective scan: one chunk of time steps of one (batch, channel) row, vectorized
// over the state dimension N with `omp simd`. Each function is compiled three times (AVX-512, AVX2,
// baseline x86-64) by target_clones and the loader picks the best one the machine supports, so the package
// runs everywhere and uses AVX-512 where it exists. Instantiated for float (fp32/fp16/bf16 inputs) and
// double (fp64 inputs, for gradcheck).
//
// B and C are read through a time stride: N for a transposed chunk of input-dependent B/C ([t][n]), 0 for
// a constant (dim, N) row. Gradients dB and dC are accumulated through the same strides.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MAMBA_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MAMBA_CPU_CLONES
#endif

namespace mamba_ext::cpu {

// exp(x) in float without a library call, so loops over it vectorize: x = k*ln2 + r with |r| <= ln2/2,
// exp(r) by its degree-6 Taylor polynomial (relative error < 2e-7), 2^k by building the exponent bits.
// Inputs below -87 (where exp underflows) give exp(-87) ~ 1.6e-38; NaN stays NaN.
inline float fast_exp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float k = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = (x - k * 0.693145751953125f) - k * 1.42860682030941723e-6f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}
inline double fast_exp(double x) { return std::exp(x); }

// Forward over one chunk: h (N) enters as the state before the chunk and leaves as the state after it;
// y[t] = sum_n C[t,n] h_t[n] (without the D skip term).
template <typename acc_t>
MAMBA_CPU_CLONES void scan_chunk_forward(int64_t len, int64_t N, const acc_t* __restrict dt,
                                         const acc_t* __restrict dtu, const acc_t* __restrict B,
                                         int64_t B_t_stride, const acc_t* __restrict C, int64_t C_t_stride,
                                         const acc_t* __restrict A, acc_t* __restrict h, acc_t* __restrict y) {
  for (int64_t t = 0; t < len; ++t) {
    const acc_t dt_t = dt[t], dtu_t = dtu[t];
    const acc_t* __restrict B_t = B + t * B_t_stride;
    const acc_t* __restrict C_t = C + t * C_t_stride;
    acc_t acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t n = 0; n < N; ++n) {
      const acc_t h_n = fast_exp(dt_t * A[n]) * h[n] + dtu_t * B_t[n];
      h[n] = h_n;
      acc += C_t[n] * h_n;
    }
    y[t] = acc;
  }
}

// The forward again, keeping every state hs[t*N + n] = h_t[n] and decay as[t*N + n] = exp(dt_t A[n]) of
// the chunk for the reverse pass. h0 is the state entering the chunk.
template <typename acc_t>
MAMBA_CPU_CLONES void scan_chunk_recompute(int64_t len, int64_t N, const acc_t* __restrict dt,
                                           const acc_t* __restrict dtu, const acc_t* __restrict B,
                                           int64_t B_t_stride, const acc_t* __restrict C, int64_t C_t_stride,
                                           const acc_t* __restrict A, const acc_t* __restrict h0,
                                           acc_t* __restrict hs, acc_t* __restrict as, acc_t* __restrict y) {
  for (int64_t t = 0; t < len; ++t) {
    const acc_t dt_t = dt[t], dtu_t = dtu[t];
    const acc_t* __restrict B_t = B + t * B_t_stride;
    const acc_t* __restrict C_t = C + t * C_t_stride;
    const acc_t* __restrict h_prev = t == 0 ? h0 : hs + (t - 1) * N;
    acc_t* __restrict h_t = hs + t * N;
    acc_t* __restrict a_t = as + t * N;
    acc_t acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t n = 0; n < N; ++n) {
      const acc_t a = fast_exp(dt_t * A[n]);
      const acc_t h_n = a * h_prev[n] + dtu_t * B_t[n];
      a_t[n] = a;
      h_t[n] = h_n;
      acc += C_t[n] * h_n;
    }
    y[t] = acc;
  }
}

// Reverse pass over one chunk. g_next (N) enters as dL/dh at the chunk's last step coming from later
// steps (a_{t+1} g_{t+1}, or the gradient of last_state) and leaves as dL/dh of the state entering the
// chunk. dy[t] = dL/dy_t. Accumulates dA (N), dB, dC; writes ddt[t] (gradient of the discretized dt) and
// du_scan[t] (gradient of u through the B*u term).
template <typename acc_t>
MAMBA_CPU_CLONES void scan_chunk_reverse(int64_t len, int64_t N, const acc_t* __restrict dt,
                                         const acc_t* __restrict u, const acc_t* __restrict dtu,
                                         const acc_t* __restrict dy, const acc_t* __restrict B,
                                         int64_t B_t_stride, const acc_t* __restrict C, int64_t C_t_stride,
                                         const acc_t* __restrict A, const acc_t* __restrict h0,
                                         const acc_t* __restrict hs, const acc_t* __restrict as,
                                         acc_t* __restrict g_next, acc_t* __restrict dB, int64_t dB_t_stride,
                                         acc_t* __restrict dC, int64_t dC_t_stride, acc_t* __restrict dA,
                                         acc_t* __restrict ddt, acc_t* __restrict du_scan) {
  for (int64_t t = len - 1; t >= 0; --t) {
    const acc_t dt_t = dt[t], dtu_t = dtu[t], dy_t = dy[t];
    const acc_t* __restrict B_t = B + t * B_t_stride;
    const acc_t* __restrict C_t = C + t * C_t_stride;
    const acc_t* __restrict h_prev = t == 0 ? h0 : hs + (t - 1) * N;
    const acc_t* __restrict h_t = hs + t * N;
    const acc_t* __restrict a_t = as + t * N;
    acc_t* __restrict dB_t = dB + t * dB_t_stride;
    acc_t* __restrict dC_t = dC + t * dC_t_stride;
    acc_t d_dtA = 0, d_Bu = 0;
#pragma omp simd reduction(+ : d_dtA, d_Bu)
    for (int64_t n = 0; n < N; ++n) {
      const acc_t g = C_t[n] * dy_t + g_next[n];  // dL/dh_t
      const acc_t ga = g * a_t[n] * h_prev[n];    // dL/d(dt_t A[n])
      dB_t[n] += g * dtu_t;
      dC_t[n] += dy_t * h_t[n];
      dA[n] += ga * dt_t;
      d_dtA += ga * A[n];
      d_Bu += g * B_t[n];
      g_next[n] = a_t[n] * g;
    }
    ddt[t] = d_dtA + d_Bu * u[t];
    du_scan[t] = d_Bu * dt_t;
  }
}

}  // namespace mamba_ext::cpu
