// Inner loops of the CPU selective scan over one chunk of time steps, with 64-byte GCC vector types (one
// AVX-512 register: 16 floats or 8 doubles). The forward puts one channel in each lane; the backward's
// recompute and reverse pass vectorize one channel over the state dimension N, padded to a multiple of the
// vector width with zeros in A, B, C and the state, which keeps the padded lanes at exactly zero. Each function is compiled three times (AVX-512, AVX2, baseline x86-64) by
// target_clones and the loader picks the best the machine supports. Instantiated for float (fp32/fp16/bf16
// inputs) and double (fp64 inputs, for gradcheck).
//
// In the backward, B and C are read through a time stride: the padded width for a transposed chunk of
// input-dependent B/C ([t][n]), 0 for a constant row; dB and dC are accumulated through the same strides.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define MAMBA_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#define MAMBA_CPU_AVX512_PATH 1
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
  static MAMBA_INLINE vec splat(T x) { return vec{} + x; }
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

// The reduction and polynomial both exps share: x = k ln2 + r with k in t's low mantissa bits, and
// p = exp(r). x must be within [-87, 88] or handled by the caller's scaling.
struct ExpParts {
  Simd<float>::vec t, k, p;
};
MAMBA_INLINE ExpParts exp_parts(Simd<float>::vec x) {
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23
  ExpParts e;
  e.t = x * 1.44269504088896341f + kRound;
  e.k = e.t - kRound;
  const Simd<float>::vec r = (x - e.k * 0.693145751953125f) - e.k * 1.42860682030941723e-6f;
  e.p = r * (1.0f / 720.0f) + 1.0f / 120.0f;
  e.p = e.p * r + 1.0f / 24.0f;
  e.p = e.p * r + 1.0f / 6.0f;
  e.p = e.p * r + 0.5f;
  e.p = e.p * r + 1.0f;
  e.p = e.p * r + 1.0f;
  return e;
}
// exp of 16 floats without a library call: x = k ln2 + r with |r| <= ln2/2, exp(r) by its degree-6 Taylor
// polynomial (relative error < 2e-7), 2^k from the exponent bits. k is rounded with the 1.5 * 2^23 trick:
// adding it leaves round(x / ln2) in the low mantissa bits, which a shift by 23 turns into 2^k's exponent.
// Inputs below -87 (where exp underflows) give exp(-87) ~ 1.6e-38; NaN stays NaN.
MAMBA_INLINE Simd<float>::vec vexp(Simd<float>::vec x) {
  typedef int32_t ivec __attribute__((vector_size(64)));
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const ExpParts e = exp_parts(x);
  const ivec scale = (reinterpret_cast<ivec>(e.t) << 23) + 0x3f800000;  // (k + 127) << 23
  return e.p * reinterpret_cast<Simd<float>::vec>(scale);
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
// vexp's reduction and polynomial, with 2^k applied by AVX-512's vscalefps. It scales by any integer power
// and overflows to inf by itself, so the upper clamp and the exponent-bit arithmetic go: 12 vector ops
// instead of 15. The lower clamp stays: it keeps results normal, because denormal operands cost microcode
// assists. Results equal vexp's wherever exp(x) is finite in float (x <= 88). Above that they are inf where
// vexp saturates at exp(88). Inlined only into functions compiled for AVX-512 (target + flatten), never
// into the portable clones.
struct ScalefExp {
  __attribute__((target("avx512f"))) inline Simd<float>::vec operator()(Simd<float>::vec x) const {
    x = x < -87.0f ? -87.0f : x;
    const ExpParts e = exp_parts(x);
    return reinterpret_cast<Simd<float>::vec>(
        _mm512_scalef_ps(reinterpret_cast<__m512>(e.p), reinterpret_cast<__m512>(e.k)));
  }
};

// Whether the float forward takes the ScalefExp path: the CPU runs AVX-512F, and MAMBA_EXT_DISABLE_AVX512 is
// unset (the tests set it in a subprocess to check the portable path on an AVX-512 machine).
inline bool cpu_has_avx512f() {
  static const bool has = __builtin_cpu_supports("avx512f") && std::getenv("MAMBA_EXT_DISABLE_AVX512") == nullptr;
  return has;
}
#endif

// One state n of a forward step for W channels at once (one per vector lane): updates h[n] and adds
// C[n] * h[n] to acc.
template <typename acc_t, bool kVariableB, bool kVariableC, typename Exp>
MAMBA_INLINE void lanes_state_step(int64_t t, int64_t n, typename Simd<acc_t>::vec dt, typename Simd<acc_t>::vec dtu,
                                   const acc_t* __restrict B, int64_t B_t_stride, const acc_t* __restrict C,
                                   int64_t C_t_stride, const acc_t* __restrict A, acc_t* __restrict h,
                                   typename Simd<acc_t>::vec& acc) {
  using S = Simd<acc_t>;
  constexpr int64_t W = S::kWidth;
  const auto B_n = kVariableB ? S::splat(B[t * B_t_stride + n]) : S::load(B + n * W);
  const auto C_n = kVariableC ? S::splat(C[t * C_t_stride + n]) : S::load(C + n * W);
  const auto h_n = Exp()(dt * S::load(A + n * W)) * S::load(h + n * W) + dtu * B_n;
  S::store(h + n * W, h_n);
  acc += C_n * h_n;
}

// Forward over one chunk for W = Simd<acc_t>::kWidth channels at once, one per vector lane, so steps need
// no horizontal sums and input-dependent B/C are broadcast from memory. h (N x W: state n of lane l at
// h[n * W + l]) enters as the state before the chunk and leaves as the state after it; dt, dtu and y are
// len x W; y[t] = sum_n C[t,n] h_t[n] (without the D skip term). B (and C) are either input-dependent,
// shared by the lanes (B[t * B_t_stride + n]), or constant per lane (B[n * W + l]). A is N x W.
// The loop is written once; scan_chunk_forward_lanes compiles it with the portable exp for every target,
// scan_chunk_forward_lanes_avx512 with ScalefExp for AVX-512 (fp32 only).
template <typename acc_t, bool kVariableB, bool kVariableC, typename Exp>
MAMBA_INLINE void forward_lanes_loop(int64_t len, int64_t N, const acc_t* __restrict dt, const acc_t* __restrict dtu,
                                     const acc_t* __restrict B, int64_t B_t_stride, const acc_t* __restrict C,
                                     int64_t C_t_stride, const acc_t* __restrict A, acc_t* __restrict h,
                                     acc_t* __restrict y) {
  using S = Simd<acc_t>;
  constexpr int64_t W = S::kWidth;
  for (int64_t t = 0; t < len; ++t) {
    const auto dt_t = S::load(dt + t * W), dtu_t = S::load(dtu + t * W);
    typename S::vec acc0{}, acc1{};  // two sums: the additions of consecutive states can overlap
    int64_t n = 0;
    for (; n + 1 < N; n += 2) {
      lanes_state_step<acc_t, kVariableB, kVariableC, Exp>(t, n, dt_t, dtu_t, B, B_t_stride, C, C_t_stride, A, h,
                                                           acc0);
      lanes_state_step<acc_t, kVariableB, kVariableC, Exp>(t, n + 1, dt_t, dtu_t, B, B_t_stride, C, C_t_stride, A,
                                                           h, acc1);
    }
    if (n < N) {
      lanes_state_step<acc_t, kVariableB, kVariableC, Exp>(t, n, dt_t, dtu_t, B, B_t_stride, C, C_t_stride, A, h,
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
                                               acc_t* __restrict y) {
  forward_lanes_loop<acc_t, kVariableB, kVariableC, PortableExp>(len, N, dt, dtu, B, B_t_stride, C, C_t_stride, A,
                                                                 h, y);
}

#if MAMBA_CPU_AVX512_PATH
// flatten: inlines ScalefExp (an AVX-512 function) through the portable helpers into this AVX-512 function.
template <bool kVariableB, bool kVariableC>
__attribute__((target("avx512f"), flatten)) void scan_chunk_forward_lanes_avx512(
    int64_t len, int64_t N, const float* __restrict dt, const float* __restrict dtu, const float* __restrict B,
    int64_t B_t_stride, const float* __restrict C, int64_t C_t_stride, const float* __restrict A,
    float* __restrict h, float* __restrict y) {
  forward_lanes_loop<float, kVariableB, kVariableC, ScalefExp>(len, N, dt, dtu, B, B_t_stride, C, C_t_stride, A, h,
                                                               y);
}
#endif

// The forward again, keeping every state hs[t*Np + n] = h_t[n] and decay as[t*Np + n] = exp(dt_t A[n])
// of the chunk for the reverse pass. h0 is the state entering the chunk.
template <typename acc_t>
MAMBA_CPU_CLONES void scan_chunk_recompute(int64_t len, int64_t Np, const acc_t* __restrict dt,
                                           const acc_t* __restrict dtu, const acc_t* __restrict B,
                                           int64_t B_t_stride, const acc_t* __restrict C, int64_t C_t_stride,
                                           const acc_t* __restrict A, const acc_t* __restrict h0,
                                           acc_t* __restrict hs, acc_t* __restrict as, acc_t* __restrict y) {
  using S = Simd<acc_t>;
  for (int64_t t = 0; t < len; ++t) {
    const auto dt_t = S::splat(dt[t]), dtu_t = S::splat(dtu[t]);
    const acc_t* h_prev = t == 0 ? h0 : hs + (t - 1) * Np;
    typename S::vec acc{};
    for (int64_t n = 0; n < Np; n += S::kWidth) {
      const auto a = vexp(dt_t * S::load(A + n));
      const auto h_n = a * S::load(h_prev + n) + dtu_t * S::load(B + t * B_t_stride + n);
      S::store(as + t * Np + n, a);
      S::store(hs + t * Np + n, h_n);
      acc += S::load(C + t * C_t_stride + n) * h_n;
    }
    y[t] = S::sum(acc);
  }
}

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
