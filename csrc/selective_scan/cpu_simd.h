// 64-byte GCC vector types for the CPU selective scan (one AVX-512 register: 16 floats or 8 doubles), the
// build macros of its loops, an in-register transpose and the AVX-512 run-time switch. Each loop is compiled
// three times (AVX-512, AVX2, baseline x86-64) by target_clones (MAMBA_CPU_CLONES), and the loader picks the
// best the machine supports; some fp32 loops also have AVX-512 builds with intrinsics, chosen at run time
// (cpu_has_avx512f).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define MAMBA_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#define MAMBA_CPU_AVX512_PATH 1
// GCC 12's AVX-512 intrinsics pass a deliberately undefined merge operand, which -Wmaybe-uninitialized
// reports wherever they are inlined (GCC bug 105593). Each header with intrinsics turns it off for its code.
#define MAMBA_AVX512_WARNINGS_OFF \
  _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"")
#define MAMBA_AVX512_WARNINGS_ON _Pragma("GCC diagnostic pop")
#else
#define MAMBA_CPU_CLONES
#define MAMBA_CPU_AVX512_PATH 0
#define MAMBA_AVX512_WARNINGS_OFF
#define MAMBA_AVX512_WARNINGS_ON
#endif
// Helpers must inline into each clone: called out of line they would use the baseline vector ABI.
#define MAMBA_INLINE inline __attribute__((always_inline))

MAMBA_AVX512_WARNINGS_OFF
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

#if MAMBA_CPU_AVX512_PATH
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

}  // namespace mamba_ext::cpu
MAMBA_AVX512_WARNINGS_ON
