// Vector exps of the CPU selective scan: vexp for every build, TableExp for the AVX-512 builds, and the
// forward recurrence's decays exp(dt A) built on them. Accuracy: tests/cpp/test_cpu_exp.cpp.
#pragma once

#include <cmath>

#include "selective_scan/cpu_simd.h"

MAMBA_AVX512_WARNINGS_OFF
namespace mamba_ext::cpu {

// exp of 16 floats without a library call: x = k ln2 + r with |r| <= ln2/2, exp(r) by its degree-6 Taylor
// polynomial (relative error < 2e-7), 2^k from the exponent bits. k is rounded with the 1.5 * 2^23 trick:
// adding it leaves round(x / ln2) in the low mantissa bits, which a shift by 23 turns into 2^k's exponent.
// Inputs below -87 (where exp underflows) give exp(-87) ~ 1.6e-38; NaN stays NaN.
MAMBA_INLINE Simd<float>::vec vexp(Simd<float>::vec x) {
  typedef int32_t ivec __attribute__((vector_size(64)));
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const Simd<float>::vec t = x * 1.44269504088896341f + kRound, k = t - kRound;
  const Simd<float>::vec r = (x - k * 0.693145751953125f) - k * 1.42860682030941723e-6f;
  Simd<float>::vec p = r * (1.0f / 720.0f) + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const ivec scale = (reinterpret_cast<ivec>(t) << 23) + 0x3f800000;  // (k + 127) << 23
  return p * reinterpret_cast<Simd<float>::vec>(scale);
}
MAMBA_INLINE Simd<double>::vec vexp(Simd<double>::vec x) {
  for (int64_t i = 0; i < Simd<double>::kWidth; ++i) x[i] = std::exp(x[i]);
  return x;
}
struct PortableExp {
  template <typename V>
  MAMBA_INLINE V operator()(V x) const { return vexp(x); }
};

#if MAMBA_CPU_AVX512_PATH
// exp of 16 floats for the AVX-512 loops in 11 vector ops, clamps included: x log2(e) = k + j/16 + f with
// integer k, j in 0..15 and |f| <= 1/32, so exp(x) = 2^k 2^(j/16) 2^f.
// - k + j/16 is rounded with 1.5 * 2^19 (a float of ulp 1/16): adding it leaves j in the sum's low 4
//   mantissa bits, and vpermps reads the 16-entry table of 2^(j/16) (one register) with exactly those bits.
// - 2^f = exp(f ln2) by its degree-3 Taylor polynomial (|f ln2| <= 0.0217: error < 1e-8).
// - vscalefps multiplies by 2^floor(k + j/16) = 2^k.
// x is clamped to [-87, 89]: the lower bound keeps results normal (denormal operands cost microcode
// assists) and maps -inf to exp(-87); above 89 the result is inf, as it would be (beyond ~2^25 the rounding
// would otherwise leave |f| large and the polynomial negative). Relative error against exp of the float
// input (tests/cpp/test_cpu_exp.cpp): 1.8e-7 for |x| <= 2 (vexp: 2.4e-7), rising to 1.3e-6 at x = -87. That
// comes from log2(e) rounded to float and stays below what the rounding of x itself (6e-8 relative) already
// moves exp(x) there (5e-6).
// Inlined only into functions compiled for AVX-512 (target + flatten), never into the portable clones.
struct TableExp {
  // 2^(d r) for d r in [-2^18, 2^18]: kj = k + j/16 rounded with 1.5 * 2^19 (j left in the sum's low mantissa
  // bits), f = d r - kj with one rounding (FMA) and |f| <= 1/32, then the table, the polynomial and scalef.
  // 9 vector ops.
  __attribute__((target("avx512f"))) static inline __m512 exp2_product(__m512 d, __m512 r) {
    const __m512 round = _mm512_set1_ps(786432.0f);  // 1.5 * 2^19
    const __m512 s = _mm512_fmadd_ps(d, r, round), kj = _mm512_sub_ps(s, round);
    const __m512 f = _mm512_fmsub_ps(d, r, kj);
    __m512 p = _mm512_fmadd_ps(f, _mm512_set1_ps(0.0555041086648216f), _mm512_set1_ps(0.240226506959101f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.693147180559945f));  // (ln2)^3/6, (ln2)^2/2, ln2
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    const __m512 table = _mm512_set_ps(  // 2^(j/16), j = 15 .. 0
        1.9152065613971472f, 1.8340080864093424f, 1.7562521603732995f, 1.6817928305074290f, 1.6104903319492543f,
        1.5422108254079407f, 1.4768261459394993f, 1.4142135623730951f, 1.3542555469368927f, 1.2968395546510096f,
        1.2418578120734840f, 1.1892071150027210f, 1.1387886347566916f, 1.0905077326652577f, 1.0442737824274138f,
        1.0f);
    const __m512 two_j = _mm512_permutexvar_ps(_mm512_castps_si512(s), table);
    return _mm512_scalef_ps(_mm512_mul_ps(p, two_j), kj);
  }
  __attribute__((target("avx512f"))) inline Simd<float>::vec operator()(Simd<float>::vec v) const {
    // min/max with x second: NaN stays NaN.
    const __m512 x = _mm512_min_ps(_mm512_set1_ps(89.0f),
                                   _mm512_max_ps(_mm512_set1_ps(-87.0f), reinterpret_cast<__m512>(v)));
    return reinterpret_cast<Simd<float>::vec>(exp2_product(x, _mm512_set1_ps(1.44269504088896341f)));
  }
};
#endif

// Decays of the forward recurrence, exp(dt A[n]), from a step's dt and a row a of the state's A.
// PortableDecay: a = A, for every build.
struct PortableDecay {
  template <typename V>
  MAMBA_INLINE V operator()(V dt, V a) const { return vexp(dt * a); }
};
#if MAMBA_CPU_AVX512_PATH
// The AVX-512 forward takes a = A log2(e) and computes 2^(dt a) with the product fused by FMA into both the
// rounding and the remainder: 9 vector ops where TableExp()(dt * A) takes 12. Exact only while every dt a
// lies in [-125, 125] (no clamp: results stay normal and the rounding keeps |f| <= 1/32);
// scan_chunk_forward_lanes_avx512 checks that for each piece and otherwise runs Exp2DecayClamped.
struct Exp2Decay {
  __attribute__((target("avx512f"))) inline Simd<float>::vec operator()(Simd<float>::vec dt, Simd<float>::vec a) const {
    return reinterpret_cast<Simd<float>::vec>(
        TableExp::exp2_product(reinterpret_cast<__m512>(dt), reinterpret_cast<__m512>(a)));
  }
};
// Any dt a: the product clamped to [-125, 128] (TableExp's range in base 2; 2^128 overflows to inf).
struct Exp2DecayClamped {
  __attribute__((target("avx512f"))) inline Simd<float>::vec operator()(Simd<float>::vec dt, Simd<float>::vec a) const {
    const __m512 x = _mm512_min_ps(_mm512_set1_ps(128.0f),
                                   _mm512_max_ps(_mm512_set1_ps(-125.0f), reinterpret_cast<__m512>(dt * a)));
    return reinterpret_cast<Simd<float>::vec>(TableExp::exp2_product(x, _mm512_set1_ps(1.0f)));
  }
};
#endif

}  // namespace mamba_ext::cpu
MAMBA_AVX512_WARNINGS_ON
