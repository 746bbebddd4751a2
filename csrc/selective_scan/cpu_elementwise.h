// Per-time-step elementwise work of the CPU selective scan (discretization, gating and their gradients),
// vectorized over time with the 64-byte vectors of cpu_simd.h. The passes take a length n that is a
// multiple of the vector width: callers round the chunk length up and ignore the lanes past it, which
// read and write only scratch. dot takes any n: a sum must not add those lanes.
#pragma once

#include "selective_scan/cpu_exp.h"

MAMBA_AVX512_WARNINGS_OFF
namespace mamba_ext::cpu {

// log(w) for w in [1, 2]: w = m 2^e with m in [1/sqrt2, sqrt2], log m = 2 atanh(s), s = (m-1)/(m+1), by
// its odd series to s^9 (|s| <= 0.172: relative error < 1e-8).
MAMBA_INLINE Simd<float>::vec vlog_1_to_2(Simd<float>::vec w) {
  const auto big = w > 1.41421356f;
  const Simd<float>::vec m = big ? w * 0.5f : w, e = big ? Simd<float>::splat(1.0f) : Simd<float>::splat(0.0f);
  const auto s = (m - 1.0f) / (m + 1.0f), s2 = s * s;
  const auto series = (((s2 * (1.0f / 9) + 1.0f / 7) * s2 + 1.0f / 5) * s2 + 1.0f / 3) * s2 + 1.0f;
  return e * 0.693147180559945f + 2.0f * s * series;
}

#if MAMBA_CPU_AVX512_PATH
// softplus in the AVX-512 builds without vsoftplus's division and atanh series: ~30 vector ops per 16 values
// against ~40 and a vdivps (perf: the discretize pass 10.8% -> 7.0% of the forward).
// softplus(x) = max(x, 0) + log1p(y) with y = exp(-|x|) in (0, 1], and, as in vsoftplus below,
// log1p(y) = log(w) + (y - (w - 1)) with w = 1 + y rounded, held below 2 (at x = 0 the correction then adds
// 2^-23 for a log that was 2^-24 low: 6e-8 too much). log(w) = log(1 + q) - log(r_j), q = w r_j - 1, with
// r_j = 1/c_j (float) picked by w's top 5 mantissa bits: c_0 = 1 (r_0 = 1, log 0: no cancellation as w -> 1,
// where |q| < 1/32), else the middle of the bin, c_j = 1 + (j + 0.5)/32 (|q| <= 1/65). log1p(q) by its
// series to q^5 (relative error < 6e-9). Tables: r_j = float(1/c_j), -log(r_j) in double, rounded to float.
// Above 20 the sum is x exactly (log1p(e^-20) = 2e-9 is below half an ulp of 20): the reference's threshold
// needs no branch.
__attribute__((target("avx512f"))) inline Simd<float>::vec vsoftplus_avx512(Simd<float>::vec v) {
  const __m512 x = reinterpret_cast<__m512>(v);
  const __m512 minus_ax = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(x), _mm512_set1_epi32(INT32_MIN)));
  const __m512 y = reinterpret_cast<__m512>(TableExp()(reinterpret_cast<Simd<float>::vec>(minus_ax)));
  const __m512 w = _mm512_min_ps(_mm512_add_ps(y, _mm512_set1_ps(1.0f)), _mm512_set1_ps(0x1.fffffep0f));
  const __m512i bin = _mm512_srli_epi32(_mm512_castps_si512(w), 18);  // low 5 bits: w's top mantissa bits
  const __m512 r = _mm512_permutex2var_ps(
      _mm512_set_ps(0.67368424f, 0.68817204f, 0.7032967f, 0.71910113f, 0.7356322f, 0.7529412f, 0.7710843f,
                    0.79012346f, 0.8101266f, 0.83116883f, 0.85333335f, 0.8767123f, 0.90140843f, 0.92753625f,
                    0.95522386f, 1.0f),
      bin,
      _mm512_set_ps(0.503937f, 0.512f, 0.5203252f, 0.5289256f, 0.53781515f, 0.5470086f, 0.5565217f, 0.5663717f,
                    0.5765766f, 0.58715594f, 0.5981308f, 0.60952383f, 0.6213592f, 0.63366336f, 0.64646465f,
                    0.6597938f));
  const __m512 minus_log_r = _mm512_permutex2var_ps(
      _mm512_set_ps(0.39499375f, 0.3737164f, 0.3519764f, 0.32975328f, 0.30702505f, 0.28376815f, 0.25995755f,
                    0.23556606f, 0.21056475f, 0.18492234f, 0.15860501f, 0.13157636f, 0.10379681f, 0.0752234f,
                    0.04580956f, 0.0f),
      bin,
      _mm512_set_ps(0.685304f, 0.6694306f, 0.6533013f, 0.6369075f, 0.62024033f, 0.6032908f, 0.5860491f,
                    0.56850475f, 0.5506471f, 0.53246486f, 0.51394576f, 0.49507722f, 0.4758459f, 0.45623744f,
                    0.43623677f, 0.41582793f));
  const __m512 q = _mm512_fmsub_ps(w, r, _mm512_set1_ps(1.0f));
  __m512 p = _mm512_fmadd_ps(q, _mm512_set1_ps(0.2f), _mm512_set1_ps(-0.25f));
  p = _mm512_fmadd_ps(p, q, _mm512_set1_ps(1.0f / 3));
  p = _mm512_fmadd_ps(p, q, _mm512_set1_ps(-0.5f));
  p = _mm512_fmadd_ps(p, q, _mm512_set1_ps(1.0f));
  const __m512 log_w = _mm512_fmadd_ps(p, q, minus_log_r);
  const __m512 dropped = _mm512_sub_ps(y, _mm512_sub_ps(w, _mm512_set1_ps(1.0f)));
  const __m512 pos = _mm512_max_ps(_mm512_setzero_ps(), x);  // x second: NaN stays NaN
  return reinterpret_cast<Simd<float>::vec>(_mm512_add_ps(pos, _mm512_add_ps(log_w, dropped)));
}
#endif

// softplus(x) = max(x, 0) + log1p(exp(-|x|)), and x itself above 20 (the threshold of the reference).
// log1p(y) = log(w) + (y - (w - 1)) with w = 1 + y rounded to float: the second term is what that rounding
// dropped, exactly, and stands in for log(1 + c / w) ~ c / w (relative error below 6e-8 from c instead of
// c / w). Tiny y stay accurate without the division by (w - 1) an earlier version used: 11% faster, max
// relative error 3.7e-7 either way on [-30, 30]. Exp: PortableExp; with TableExp (inside AVX-512 builds)
// this is vsoftplus_avx512.
template <typename Exp = PortableExp>
MAMBA_INLINE Simd<float>::vec vsoftplus(Simd<float>::vec x) {
#if MAMBA_CPU_AVX512_PATH
  if constexpr (std::is_same_v<Exp, TableExp>) return vsoftplus_avx512(x);
#endif
  const auto ax = x < 0.0f ? -x : x;
  const Simd<float>::vec y = Exp()(-ax), w = y + 1.0f;
  const Simd<float>::vec log1p_y = vlog_1_to_2(w) + (y - (w - 1.0f));
  const Simd<float>::vec pos = x > 0.0f ? x : Simd<float>::splat(0.0f);
  return x > 20.0f ? x : pos + log1p_y;
}
template <typename Exp = PortableExp>
MAMBA_INLINE Simd<double>::vec vsoftplus(Simd<double>::vec x) {
  for (int64_t i = 0; i < Simd<double>::kWidth; ++i) x[i] = x[i] > 20 ? x[i] : std::log1p(std::exp(x[i]));
  return x;
}


template <typename Exp = PortableExp, typename vec>
MAMBA_INLINE vec vsigmoid(vec x) {
  return 1.0f / (Exp()(-x) + 1.0f);
}

// dt = softplus?(x + bias) and dtu = dt * u (x: delta, or delta + delta_bias already, with bias 0).
template <typename acc_t, typename Exp>
MAMBA_INLINE void discretize_loop(int64_t n, bool softplus, const acc_t* __restrict u, const acc_t* __restrict x,
                                  acc_t bias, acc_t* __restrict dt, acc_t* __restrict dtu) {
  using S = Simd<acc_t>;
  for (int64_t i = 0; i < n; i += S::kWidth) {
    auto v = S::load(x + i) + bias;
    if (softplus) v = vsoftplus<Exp>(v);
    S::store(dt + i, v);
    S::store(dtu + i, v * S::load(u + i));
  }
}

// y = (y + D u) * silu(z) in place; without z (nullptr), y + D u.
template <typename acc_t, typename Exp>
MAMBA_INLINE void gate_forward_loop(int64_t n, acc_t D, const acc_t* __restrict u, const acc_t* __restrict z,
                                    acc_t* __restrict y) {
  using S = Simd<acc_t>;
  for (int64_t i = 0; i < n; i += S::kWidth) {
    auto v = S::load(y + i) + D * S::load(u + i);
    if (z) v *= S::load(z + i) * vsigmoid<Exp>(S::load(z + i));
    S::store(y + i, v);
  }
}

// Each loop compiled by the target clones with the portable exp, and for AVX-512 with TableExp (fp32; flatten
// inlines TableExp, an AVX-512 function). A/B (forward, 2 threads): see docs/performance.md, v10.
template <typename acc_t>
MAMBA_CPU_CLONES void discretize_portable(int64_t n, bool softplus, const acc_t* __restrict u,
                                          const acc_t* __restrict x, acc_t bias, acc_t* __restrict dt,
                                          acc_t* __restrict dtu) {
  discretize_loop<acc_t, PortableExp>(n, softplus, u, x, bias, dt, dtu);
}
template <typename acc_t>
MAMBA_CPU_CLONES void gate_forward_portable(int64_t n, acc_t D, const acc_t* __restrict u, const acc_t* __restrict z,
                                            acc_t* __restrict y) {
  gate_forward_loop<acc_t, PortableExp>(n, D, u, z, y);
}
#if MAMBA_CPU_AVX512_PATH
__attribute__((target("avx512f"), flatten)) inline void discretize_avx512(int64_t n, bool softplus,
                                                                        const float* __restrict u,
                                                                        const float* __restrict x, float bias,
                                                                        float* __restrict dt, float* __restrict dtu) {
  discretize_loop<float, TableExp>(n, softplus, u, x, bias, dt, dtu);
}
__attribute__((target("avx512f"), flatten)) inline void gate_forward_avx512(int64_t n, float D,
                                                                          const float* __restrict u,
                                                                          const float* __restrict z,
                                                                          float* __restrict y) {
  gate_forward_loop<float, TableExp>(n, D, u, z, y);
}
#endif

// The AVX-512 build for fp32 where the CPU has it (cpu_has_avx512f), else the clones.
template <typename acc_t>
inline void discretize(int64_t n, bool softplus, const acc_t* u, const acc_t* x, acc_t bias, acc_t* dt,
                       acc_t* dtu) {
#if MAMBA_CPU_AVX512_PATH
  if constexpr (std::is_same_v<acc_t, float>) {
    if (cpu_has_avx512f()) return discretize_avx512(n, softplus, u, x, bias, dt, dtu);
  }
#endif
  discretize_portable<acc_t>(n, softplus, u, x, bias, dt, dtu);
}
template <typename acc_t>
inline void gate_forward(int64_t n, acc_t D, const acc_t* u, const acc_t* z, acc_t* y) {
#if MAMBA_CPU_AVX512_PATH
  if constexpr (std::is_same_v<acc_t, float>) {
    if (cpu_has_avx512f()) return gate_forward_avx512(n, D, u, z, y);
  }
#endif
  gate_forward_portable<acc_t>(n, D, u, z, y);
}

// sum_t a[t] b[t] over t < n (b null: sum_t a[t]), in vector partial sums. The backward's per-channel sums
// (dD, ddelta_bias) were serial chains through memory, ~10% of a single-thread forward+backward.
template <typename acc_t>
MAMBA_CPU_CLONES acc_t dot(const acc_t* __restrict a, const acc_t* __restrict b, int64_t n) {
  using S = Simd<acc_t>;
  typename S::vec acc{};
  int64_t t = 0;
  for (; t + S::kWidth <= n; t += S::kWidth) acc += b ? S::load(a + t) * S::load(b + t) : S::load(a + t);
  acc_t sum = S::sum(acc);
  for (; t < n; ++t) sum += b ? a[t] * b[t] : a[t];
  return sum;
}

// With out = (y + D u) * silu(z): dy = dout * silu(z) and dz = dout * (y + D u) * silu'(z) (dz written
// over z's buffer); without z, dy = dout.
template <typename acc_t>
MAMBA_CPU_CLONES void gate_backward(int64_t n, acc_t D, const acc_t* __restrict dout, const acc_t* __restrict u,
                                    const acc_t* __restrict y, acc_t* __restrict z_dz, acc_t* __restrict dy) {
  using S = Simd<acc_t>;
  for (int64_t i = 0; i < n; i += S::kWidth) {
    const auto g = S::load(dout + i);
    if (!z_dz) {
      S::store(dy + i, g);
      continue;
    }
    const auto z = S::load(z_dz + i), sg = vsigmoid(z);
    S::store(z_dz + i, g * (S::load(y + i) + D * S::load(u + i)) * sg * (z * (1.0f - sg) + 1.0f));
    S::store(dy + i, g * z * sg);
  }
}

// ddt *= softplus'(x) = sigmoid(x) where x <= 20 (softplus is the identity above).
template <typename acc_t>
MAMBA_CPU_CLONES void softplus_backward(int64_t n, const acc_t* __restrict x, acc_t* __restrict ddt) {
  using S = Simd<acc_t>;
  for (int64_t i = 0; i < n; i += S::kWidth) {
    const auto xv = S::load(x + i), g = S::load(ddt + i);
    S::store(ddt + i, xv > 20.0f ? g : g * vsigmoid(xv));
  }
}

}  // namespace mamba_ext::cpu
MAMBA_AVX512_WARNINGS_ON
