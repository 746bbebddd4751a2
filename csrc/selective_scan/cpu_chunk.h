// Inner loops of the CPU selective scan over one chunk of time steps (vector types: cpu_simd.h, exps:
// cpu_exp.h). The forward puts one channel in each lane; the backward's recompute and reverse pass vectorize
// one channel over the state dimension N, padded to a multiple of the vector width with zeros in A, B, C and
// the state, which keeps the padded lanes at exactly zero. Each loop is compiled by target_clones with the
// portable exp; the fp32 forward recurrence (Exp2Decay) and the backward's recompute (TableExp) also have
// AVX-512 builds, chosen at run time (cpu_has_avx512f). Instantiated for float (fp32/fp16/bf16 inputs) and
// double (fp64 inputs, for gradcheck).
//
// In the backward, B and C are read through a time stride: the padded width for a transposed chunk of
// input-dependent B/C ([t][n]), 0 for a constant row; dB and dC are accumulated through the same strides.
#pragma once

#include <algorithm>
#include <cstdint>

#include "selective_scan/cpu_exp.h"

MAMBA_AVX512_WARNINGS_OFF
namespace mamba_ext::cpu {

// Addresses of cache lines to prefetch during a loop.
struct Prefetches {
  const char* const* lines = nullptr;
  int64_t count = 0;
};

// One state n of a forward step for W channels at once (one per vector lane): updates h[n] and adds
// C[n] * h[n] to acc.
template <typename acc_t, bool kVariableB, bool kVariableC, typename Decay>
MAMBA_INLINE void lanes_state_step(int64_t t, int64_t n, typename Simd<acc_t>::vec dt, typename Simd<acc_t>::vec dtu,
                                   const acc_t* __restrict B, int64_t B_t_stride, const acc_t* __restrict C,
                                   int64_t C_t_stride, const acc_t* __restrict A, acc_t* __restrict h,
                                   typename Simd<acc_t>::vec& acc) {
  using S = Simd<acc_t>;
  constexpr int64_t W = S::kWidth;
  const auto B_n = kVariableB ? S::splat(B[t * B_t_stride + n]) : S::load(B + n * W);
  const auto C_n = kVariableC ? S::splat(C[t * C_t_stride + n]) : S::load(C + n * W);
  const auto h_n = Decay()(dt, S::load(A + n * W)) * S::load(h + n * W) + dtu * B_n;
  S::store(h + n * W, h_n);
  acc += C_n * h_n;
}

// Forward over one chunk for W = Simd<acc_t>::kWidth channels at once, one per vector lane, so steps need
// no horizontal sums and input-dependent B/C are broadcast from memory. h (N x W: state n of lane l at
// h[n * W + l]) enters as the state before the chunk and leaves as the state after it; dt, dtu and y are
// len x W; y[t] = sum_n C[t,n] h_t[n] (without the D skip term). B (and C) are either input-dependent,
// shared by the lanes (B[t * B_t_stride + n]), or constant per lane (B[n * W + l]). A is N x W.
// prefetch: cache lines the caller reads next, asked for a few per step so that the requests never fill the
// core's line-fill buffers (a burst of them stalls until memory answers).
// The loop is written once; scan_chunk_forward_lanes compiles it with PortableDecay for every target,
// scan_chunk_forward_lanes_avx512 with Exp2Decay (or Exp2DecayClamped) for AVX-512 (fp32 only).
template <typename acc_t, bool kVariableB, bool kVariableC, typename Decay>
MAMBA_INLINE void forward_lanes_loop(int64_t len, int64_t N, const acc_t* __restrict dt, const acc_t* __restrict dtu,
                                     const acc_t* __restrict B, int64_t B_t_stride, const acc_t* __restrict C,
                                     int64_t C_t_stride, const acc_t* __restrict A, acc_t* __restrict h,
                                     acc_t* __restrict y, const Prefetches& prefetch) {
  using S = Simd<acc_t>;
  constexpr int64_t W = S::kWidth;
  const int64_t lines_per_step = len > 0 ? (prefetch.count + len - 1) / len : 0;
  for (int64_t t = 0; t < len; ++t) {
    for (int64_t i = t * lines_per_step; i < std::min(prefetch.count, (t + 1) * lines_per_step); ++i) {
      __builtin_prefetch(prefetch.lines[i]);
    }
    const auto dt_t = S::load(dt + t * W), dtu_t = S::load(dtu + t * W);
    typename S::vec acc0{}, acc1{};  // two sums: the additions of consecutive states can overlap
    int64_t n = 0;
    for (; n + 1 < N; n += 2) {
      lanes_state_step<acc_t, kVariableB, kVariableC, Decay>(t, n, dt_t, dtu_t, B, B_t_stride, C, C_t_stride, A, h,
                                                             acc0);
      lanes_state_step<acc_t, kVariableB, kVariableC, Decay>(t, n + 1, dt_t, dtu_t, B, B_t_stride, C, C_t_stride, A,
                                                             h, acc1);
    }
    if (n < N) {
      lanes_state_step<acc_t, kVariableB, kVariableC, Decay>(t, n, dt_t, dtu_t, B, B_t_stride, C, C_t_stride, A, h,
                                                             acc0);
    }
    S::store(y + t * W, acc0 + acc1);
  }
}

template <typename acc_t, bool kVariableB, bool kVariableC>
MAMBA_CPU_CLONES void scan_chunk_forward_lanes(int64_t len, int64_t N, const acc_t* __restrict dt,
                                               const acc_t* __restrict dtu, const acc_t* __restrict B,
                                               int64_t B_t_stride, const acc_t* __restrict C, int64_t C_t_stride,
                                               const acc_t* __restrict A, acc_t* __restrict h,
                                               acc_t* __restrict y, const Prefetches& prefetch) {
  forward_lanes_loop<acc_t, kVariableB, kVariableC, PortableDecay>(len, N, dt, dtu, B, B_t_stride, C, C_t_stride,
                                                                   A, h, y, prefetch);
}

#if MAMBA_CPU_AVX512_PATH
// Whether every product dt[t * W + l] a[n * W + l] (t < len, n < N) lies in [-125, 125], Exp2Decay's range:
// per lane, the products of the extremes of dt and a are the extremes of the products. Infinities fail the
// check (inf * 0 is NaN); a NaN operand is skipped by min/max, and its products are NaN on either path.
__attribute__((target("avx512f"))) inline bool decay_products_in_range(int64_t len, int64_t N,
                                                                    const float* __restrict dt,
                                                                    const float* __restrict a) {
  const __m512 inf = _mm512_set1_ps(__builtin_inff());
  __m512 dt_lo = inf, dt_hi = -inf, a_lo = inf, a_hi = -inf;
  for (int64_t t = 0; t < len; ++t) {
    const __m512 v = _mm512_loadu_ps(dt + t * 16);
    dt_lo = _mm512_min_ps(dt_lo, v);
    dt_hi = _mm512_max_ps(dt_hi, v);
  }
  for (int64_t n = 0; n < N; ++n) {
    const __m512 v = _mm512_loadu_ps(a + n * 16);
    a_lo = _mm512_min_ps(a_lo, v);
    a_hi = _mm512_max_ps(a_hi, v);
  }
  __mmask16 ok = 0xFFFF;
  for (const __m512 p : {dt_lo * a_lo, dt_lo * a_hi, dt_hi * a_lo, dt_hi * a_hi}) {
    ok &= _mm512_cmp_ps_mask(p, _mm512_set1_ps(125.0f), _CMP_LE_OQ);  // ordered: NaN fails
    ok &= _mm512_cmp_ps_mask(p, _mm512_set1_ps(-125.0f), _CMP_GE_OQ);
  }
  return ok == 0xFFFF;
}

// flatten: inlines the AVX-512 decays through the portable helpers into this AVX-512 function. A arrives as
// N x W and is scaled by log2(e) here (N <= kMaxDstate = 256, checked with the inputs).
template <bool kVariableB, bool kVariableC>
__attribute__((target("avx512f"), flatten)) void scan_chunk_forward_lanes_avx512(
    int64_t len, int64_t N, const float* __restrict dt, const float* __restrict dtu, const float* __restrict B,
    int64_t B_t_stride, const float* __restrict C, int64_t C_t_stride, const float* __restrict A,
    float* __restrict h, float* __restrict y, const Prefetches& prefetch) {
  alignas(64) float a[256 * 16];
  for (int64_t i = 0; i < N * 16; i += 16) {
    _mm512_store_ps(a + i, _mm512_mul_ps(_mm512_loadu_ps(A + i), _mm512_set1_ps(1.44269504088896341f)));
  }
  if (decay_products_in_range(len, N, dt, a)) {
    forward_lanes_loop<float, kVariableB, kVariableC, Exp2Decay>(len, N, dt, dtu, B, B_t_stride, C, C_t_stride, a,
                                                                 h, y, prefetch);
  } else {
    forward_lanes_loop<float, kVariableB, kVariableC, Exp2DecayClamped>(len, N, dt, dtu, B, B_t_stride, C,
                                                                        C_t_stride, a, h, y, prefetch);
  }
}
#endif

// The forward again, keeping every state hs[t*Np + n] = h_t[n] and decay as[t*Np + n] = exp(dt_t A[n])
// of the chunk for the reverse pass. h0 is the state entering the chunk. Written once: recompute_loop;
// scan_chunk_recompute runs the AVX-512 build (TableExp) for fp32 where the CPU has it, else the clones.
template <typename acc_t, typename Exp>
MAMBA_INLINE void recompute_loop(int64_t len, int64_t Np, const acc_t* __restrict dt, const acc_t* __restrict dtu,
                                 const acc_t* __restrict B, int64_t B_t_stride, const acc_t* __restrict C,
                                 int64_t C_t_stride, const acc_t* __restrict A, const acc_t* __restrict h0,
                                 acc_t* __restrict hs, acc_t* __restrict as, acc_t* __restrict y) {
  using S = Simd<acc_t>;
  for (int64_t t = 0; t < len; ++t) {
    const auto dt_t = S::splat(dt[t]), dtu_t = S::splat(dtu[t]);
    const acc_t* h_prev = t == 0 ? h0 : hs + (t - 1) * Np;
    typename S::vec acc{};
    for (int64_t n = 0; n < Np; n += S::kWidth) {
      const auto a = Exp()(dt_t * S::load(A + n));
      const auto h_n = a * S::load(h_prev + n) + dtu_t * S::load(B + t * B_t_stride + n);
      S::store(as + t * Np + n, a);
      S::store(hs + t * Np + n, h_n);
      acc += S::load(C + t * C_t_stride + n) * h_n;
    }
    y[t] = S::sum(acc);
  }
}
// The parameter list and the arguments, written once for the three functions below.
#define MAMBA_RECOMPUTE_PARAMS(acc_t)                                                                            \
  int64_t len, int64_t Np, const acc_t *__restrict dt, const acc_t *__restrict dtu, const acc_t *__restrict B, \
      int64_t B_t_stride, const acc_t *__restrict C, int64_t C_t_stride, const acc_t *__restrict A,            \
      const acc_t *__restrict h0, acc_t *__restrict hs, acc_t *__restrict as, acc_t *__restrict y
#define MAMBA_RECOMPUTE_ARGS len, Np, dt, dtu, B, B_t_stride, C, C_t_stride, A, h0, hs, as, y
template <typename acc_t>
MAMBA_CPU_CLONES void scan_chunk_recompute_portable(MAMBA_RECOMPUTE_PARAMS(acc_t)) {
  recompute_loop<acc_t, PortableExp>(MAMBA_RECOMPUTE_ARGS);
}
#if MAMBA_CPU_AVX512_PATH
__attribute__((target("avx512f"), flatten)) inline void scan_chunk_recompute_avx512(MAMBA_RECOMPUTE_PARAMS(float)) {
  recompute_loop<float, TableExp>(MAMBA_RECOMPUTE_ARGS);
}
#endif
template <typename acc_t>
inline void scan_chunk_recompute(MAMBA_RECOMPUTE_PARAMS(acc_t)) {
#if MAMBA_CPU_AVX512_PATH
  if constexpr (std::is_same_v<acc_t, float>) {
    if (cpu_has_avx512f()) return scan_chunk_recompute_avx512(MAMBA_RECOMPUTE_ARGS);
  }
#endif
  scan_chunk_recompute_portable<acc_t>(MAMBA_RECOMPUTE_ARGS);
}
#undef MAMBA_RECOMPUTE_PARAMS
#undef MAMBA_RECOMPUTE_ARGS

// Reverse pass over one chunk. g_next (Np) enters as dL/dh at the chunk's last step coming from later
// steps (a_{t+1} g_{t+1}, or the gradient of last_state) and leaves as dL/dh of the state entering the
// chunk. dy[t] = dL/dy_t. Accumulates dA (Np), dB, dC; writes ddt[t] (gradient of the discretized dt) and
// du_scan[t] (gradient of u through the B*u term).
template <typename acc_t>
MAMBA_CPU_CLONES void scan_chunk_reverse(int64_t len, int64_t Np, const acc_t* __restrict dt,
                                         const acc_t* __restrict u, const acc_t* __restrict dtu,
                                         const acc_t* __restrict dy, const acc_t* __restrict B,
                                         int64_t B_t_stride, const acc_t* __restrict C, int64_t C_t_stride,
                                         const acc_t* __restrict A, const acc_t* __restrict h0,
                                         const acc_t* __restrict hs, const acc_t* __restrict as,
                                         acc_t* __restrict g_next, acc_t* __restrict dB, acc_t* __restrict dC,
                                         acc_t* __restrict dA, acc_t* __restrict ddt, acc_t* __restrict du_scan) {
  using S = Simd<acc_t>;
  for (int64_t t = len - 1; t >= 0; --t) {
    const auto dt_t = S::splat(dt[t]), dtu_t = S::splat(dtu[t]), dy_t = S::splat(dy[t]);
    const acc_t* h_prev = t == 0 ? h0 : hs + (t - 1) * Np;
    typename S::vec d_dtA{}, d_Bu{};
    for (int64_t n = 0; n < Np; n += S::kWidth) {
      const auto a = S::load(as + t * Np + n), B_n = S::load(B + t * B_t_stride + n);
      const auto g = S::load(C + t * C_t_stride + n) * dy_t + S::load(g_next + n);  // dL/dh_t
      const auto ga = g * a * S::load(h_prev + n);                                     // dL/d(dt_t A[n])
      S::store(dB + t * B_t_stride + n, S::load(dB + t * B_t_stride + n) + g * dtu_t);
      S::store(dC + t * C_t_stride + n, S::load(dC + t * C_t_stride + n) + dy_t * S::load(hs + t * Np + n));
      S::store(dA + n, S::load(dA + n) + ga * dt_t);
      d_dtA += ga * S::load(A + n);
      d_Bu += g * B_n;
      S::store(g_next + n, a * g);
    }
    const acc_t sum_Bu = S::sum(d_Bu);
    ddt[t] = S::sum(d_dtA) + sum_Bu * u[t];
    du_scan[t] = sum_Bu * dt_t[0];
  }
}

}  // namespace mamba_ext::cpu
MAMBA_AVX512_WARNINGS_ON
