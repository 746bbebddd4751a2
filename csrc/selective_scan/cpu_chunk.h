// Inner loops of the CPU selective scan over one chunk of time steps, with 64-byte GCC vector types (one
// AVX-512 register: 16 floats or 8 doubles). The forward puts one channel in each lane; the backward's
// recompute and reverse pass vectorize one channel over the state dimension N, padded to a multiple of the
// vector width with zeros in A, B, C and the state, which keeps the padded lanes at exactly zero. Each loop is
// compiled three times (AVX-512, AVX2, baseline x86-64) by target_clones with the portable exp, and the loader
// picks the best the machine supports; the fp32 forward recurrence (Exp2Decay) and the backward's recompute
// (TableExp) also have AVX-512 builds, chosen at run time (cpu_has_avx512f). Instantiated for float
// (fp32/fp16/bf16 inputs) and double (fp64 inputs, for gradcheck).
//
// In the backward, B and C are read through a time stride: the padded width for a transposed chunk of
// input-dependent B/C ([t][n]), 0 for a constant row; dB and dC are accumulated through the same strides.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define MAMBA_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#define MAMBA_CPU_AVX512_PATH 1
// GCC 12's AVX-512 intrinsics pass a deliberately undefined merge operand, which -Wmaybe-uninitialized
// reports wherever they are inlined (GCC bug 105593). Off for this header's code (popped at its end).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#else
#define MAMBA_CPU_CLONES
#define MAMBA_CPU_AVX512_PATH 0
#endif
// Helpers must inline into each clone: called out of line they would use the baseline vector ABI.
#define MAMBA_INLINE inline __attribute__((always_inline))

namespace mamba_ext::cpu {

template <typename T>
struct Simd {
  static constexpr int64_t kWidth = 64 / sizeof(T);
  typedef T vec __attribute__((vector_size(64)));
  static MAMBA_INLINE vec load(const T* p) {
    vec v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }
  static MAMBA_INLINE void store(T* p, vec v) { std::memcpy(p, &v, sizeof(v)); }
  // Every lane x, as one broadcast: lane 0 shuffled everywhere. (vec{} + x compiles to a scalar add of 0,
  // which x = -0 keeps from folding, and a broadcast; a loop over the lanes to 16 masked broadcasts.)
  static MAMBA_INLINE vec splat(T x) {
    typedef std::conditional_t<sizeof(T) == 4, int32_t, int64_t> index_t;
    typedef index_t index_vec __attribute__((vector_size(64)));
    return __builtin_shuffle(vec{x}, index_vec{});
  }
  // Tree sum of the lanes: log2(width) shuffle+add pairs instead of a serial chain of width adds.
  static MAMBA_INLINE T sum(vec v) {
    typedef std::conditional_t<sizeof(T) == 4, int32_t, int64_t> index_t;
    typedef index_t index_vec __attribute__((vector_size(64)));
    index_vec lane{};
    for (int64_t i = 0; i < kWidth; ++i) lane[i] = static_cast<index_t>(i);
    for (index_t s = kWidth / 2; s >= 1; s /= 2) v += __builtin_shuffle(v, lane ^ s);
    return v[0];
  }
};

// In-register transpose of a W x W block held as W vectors (W = the vector width): v[i][j] <-> v[j][i].
// Level s exchanges bit s of the row index with bit s of the column index (the off-diagonal s x s blocks
// of every 2s x 2s block); the levels commute and together transpose. W log2(W) two-input shuffles (64 for
// 16 floats) instead of W * W scalar loads and stores.
template <typename T>
MAMBA_INLINE void transpose_block(typename Simd<T>::vec (&v)[Simd<T>::kWidth]) {
  constexpr int64_t W = Simd<T>::kWidth;
  typedef std::conditional_t<sizeof(T) == 4, int32_t, int64_t> index_t;
  typedef index_t index_vec __attribute__((vector_size(64)));
#pragma GCC unroll 4
  for (int64_t s = W / 2; s >= 1; s /= 2) {
    index_vec keep_low{}, keep_high{};  // indices >= W pick from the second operand
    for (int64_t c = 0; c < W; ++c) {
      keep_low[c] = static_cast<index_t>((c & s) ? W + c - s : c);
      keep_high[c] = static_cast<index_t>((c & s) ? W + c : c + s);
    }
#pragma GCC unroll 16
    for (int64_t i = 0; i < W; ++i) {
      if (i & s) continue;
      const auto a = v[i], b = v[i + s];
      v[i] = __builtin_shuffle(a, b, keep_low);
      v[i + s] = __builtin_shuffle(a, b, keep_high);
    }
  }
}

// n rounded up to a multiple of width (the padded state size, or a chunk length in whole vectors).
inline int64_t round_up(int64_t n, int64_t width) { return (n + width - 1) / width * width; }

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
  static constexpr float kRound = 786432.0f;  // 1.5 * 2^19
  // 2^(kj + f), from kj = k + j/16, s = kj + kRound (j in its low mantissa bits) and |f| <= 1/32: 6 ops.
  __attribute__((target("avx512f"))) static inline __m512 exp2_split(__m512 s, __m512 kj, __m512 f) {
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
    const __m512 log2e = _mm512_set1_ps(1.44269504088896341f), round = _mm512_set1_ps(kRound);
    // min/max with x second: NaN stays NaN.
    const __m512 x = _mm512_min_ps(_mm512_set1_ps(89.0f),
                                   _mm512_max_ps(_mm512_set1_ps(-87.0f), reinterpret_cast<__m512>(v)));
    const __m512 s = _mm512_fmadd_ps(x, log2e, round), kj = _mm512_sub_ps(s, round);
    // One rounding (FMA): f carries the low bits of x log2(e) that the rounding to kj dropped.
    return reinterpret_cast<Simd<float>::vec>(exp2_split(s, kj, _mm512_fmsub_ps(x, log2e, kj)));
  }
};

// dst[t] = src[t] for t < n with non-temporal stores where dst is 64-byte aligned: no read of the old line.
__attribute__((target("avx512f"))) inline void stream_row(const float* src, int64_t n, float* dst) {
  int64_t t = 0;
  for (; t < n && (reinterpret_cast<uintptr_t>(dst + t) & 63); ++t) dst[t] = src[t];
  for (; t + 16 <= n; t += 16) _mm512_stream_ps(dst + t, _mm512_loadu_ps(src + t));
  for (; t < n; ++t) dst[t] = src[t];
}

// Whether fp32 work takes the AVX-512 builds (forward recurrence, softplus and gate, backward recompute, the
// forward's non-temporal output): the CPU runs AVX-512F, and MAMBA_EXT_DISABLE_AVX512 is unset (the tests set
// it in a subprocess to check the portable path on an AVX-512 machine).
inline bool cpu_has_avx512f() {
  static const bool has = __builtin_cpu_supports("avx512f") && std::getenv("MAMBA_EXT_DISABLE_AVX512") == nullptr;
  return has;
}
#endif

// Addresses of cache lines to prefetch during a loop.
struct Prefetches {
  const char* const* lines = nullptr;
  int64_t count = 0;
};

// Decays of the forward recurrence, exp(dt A[n]), from a step's dt and a row a of the state's A.
// PortableDecay: a = A, for every build.
struct PortableDecay {
  template <typename V>
  MAMBA_INLINE V operator()(V dt, V a) const { return vexp(dt * a); }
};
#if MAMBA_CPU_AVX512_PATH
// The AVX-512 forward takes a = A log2(e) and computes 2^(dt a) with TableExp's steps, the product fused by
// FMA into both the rounding and the remainder: 9 vector ops where TableExp()(dt * A) takes 12. Exact only
// while every dt a lies in [-125, 125] (no clamp: results stay normal and the rounding keeps |f| <= 1/32);
// scan_chunk_forward_lanes_avx512 checks that for each piece and otherwise runs Exp2DecayClamped.
struct Exp2Decay {
  __attribute__((target("avx512f"))) inline Simd<float>::vec operator()(Simd<float>::vec dt, Simd<float>::vec a) const {
    const __m512 d = reinterpret_cast<__m512>(dt), r = reinterpret_cast<__m512>(a);
    const __m512 round = _mm512_set1_ps(TableExp::kRound);
    const __m512 s = _mm512_fmadd_ps(d, r, round), kj = _mm512_sub_ps(s, round);
    return reinterpret_cast<Simd<float>::vec>(TableExp::exp2_split(s, kj, _mm512_fmsub_ps(d, r, kj)));
  }
};
// Any dt a: the product clamped to [-125, 128] (TableExp's range in base 2; 2^128 overflows to inf).
struct Exp2DecayClamped {
  __attribute__((target("avx512f"))) inline Simd<float>::vec operator()(Simd<float>::vec dt, Simd<float>::vec a) const {
    const __m512 round = _mm512_set1_ps(TableExp::kRound);
    const __m512 x = _mm512_min_ps(_mm512_set1_ps(128.0f),
                                   _mm512_max_ps(_mm512_set1_ps(-125.0f), reinterpret_cast<__m512>(dt * a)));
    const __m512 s = _mm512_add_ps(x, round), kj = _mm512_sub_ps(s, round);
    return reinterpret_cast<Simd<float>::vec>(TableExp::exp2_split(s, kj, _mm512_sub_ps(x, kj)));
  }
};
#endif

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

#if MAMBA_CPU_AVX512_PATH
#pragma GCC diagnostic pop
#endif
