// Accuracy of the CPU scan's vector exps (csrc/selective_scan/cpu_exp.h) against std::exp in double:
// vexp (every CPU path) and TableExp (the forward's AVX-512 recurrence). The recurrence multiplies hundreds
// of decays exp(dt A), so besides the worst error the mean error near x = 0 must stay small: a bias there
// adds up along a sequence.
#define CATCH_CONFIG_PREFIX_ALL
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "selective_scan/cpu_elementwise.h"
#include "selective_scan/cpu_exp.h"

namespace {

using mamba_ext::cpu::Simd;
using Vec = Simd<float>::vec;
constexpr int64_t W = Simd<float>::kWidth;

struct ErrorStats {
  double worst = 0, mean = 0;
};

// Relative errors of exp over n points evenly spread on [lo, hi].
template <typename ExpFn>
ErrorStats relative_errors(ExpFn exp_fn, float lo, float hi, int64_t n) {
  std::vector<float> x(n), y(n);
  for (int64_t i = 0; i < n; ++i) x[i] = lo + (hi - lo) * static_cast<float>(i) / static_cast<float>(n - 1);
  for (int64_t i = 0; i + W <= n; i += W) exp_fn(x.data() + i, y.data() + i);
  ErrorStats s;
  const int64_t whole = n / W * W;
  for (int64_t i = 0; i < whole; ++i) {
    const double want = std::exp(static_cast<double>(x[i]));
    const double rel = (static_cast<double>(y[i]) - want) / want;
    s.worst = std::max(s.worst, std::fabs(rel));
    s.mean += rel / static_cast<double>(whole);
  }
  return s;
}

void portable_exp(const float* x, float* y) { Simd<float>::store(y, mamba_ext::cpu::vexp(Simd<float>::load(x))); }

#if MAMBA_CPU_AVX512_PATH
__attribute__((target("avx512f"), flatten)) void table_exp(const float* x, float* y) {
  Simd<float>::store(y, mamba_ext::cpu::TableExp()(Simd<float>::load(x)));
}
#endif

// The special inputs, one per lane: results for -inf, -1000, -87.5, 89, 1000, +inf, NaN, 0, 1e30 and 3e38.
template <typename ExpFn>
std::vector<float> special_values(ExpFn exp_fn) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> x(W, 0.0f), y(W);
  const float specials[] = {-inf, -1000.0f, -87.5f, 89.0f, 1000.0f, inf, std::nanf(""), 0.0f, 1e30f, 3e38f};
  std::copy(std::begin(specials), std::end(specials), x.begin());
  exp_fn(x.data(), y.data());
  return y;
}

}  // namespace

CATCH_TEST_CASE("vexp: relative error under 3e-7 on [-87, 88] and no bias near 0", "[cpu_exp]") {
  const ErrorStats wide = relative_errors(portable_exp, -87.0f, 88.0f, 1 << 20);
  CATCH_CHECK(wide.worst < 3e-7);  // measured 2.5e-7
  const ErrorStats near0 = relative_errors(portable_exp, -2.0f, 2.0f, 1 << 20);
  CATCH_CHECK(near0.worst < 3e-7);
  CATCH_CHECK(std::fabs(near0.mean) < 2e-8);  // measured 4e-9
  const std::vector<float> y = special_values(portable_exp);
  const float floor = std::exp(-87.0f), ceiling = std::exp(88.0f);
  for (int i = 0; i < 3; ++i) CATCH_CHECK(std::fabs(y[i] / floor - 1) < 1e-6);  // clamped to exp(-87)
  for (int i = 3; i < 6; ++i) CATCH_CHECK(std::fabs(y[i] / ceiling - 1) < 1e-6);  // clamped to exp(88)
  CATCH_CHECK(std::isnan(y[6]));
  CATCH_CHECK(y[7] == 1.0f);
}

#if MAMBA_CPU_AVX512_PATH
CATCH_TEST_CASE("TableExp: relative error under 2.5e-7 for |x| <= 2, 1.5e-6 on [-87, 88], no bias near 0",
                "[cpu_exp]") {
  if (!__builtin_cpu_supports("avx512f")) {
    CATCH_WARN("this CPU has no AVX-512F: TableExp is not used here and not checked");
    return;
  }
  const ErrorStats near0 = relative_errors(table_exp, -2.0f, 2.0f, 1 << 20);
  CATCH_CHECK(near0.worst < 2.5e-7);           // measured 1.8e-7
  CATCH_CHECK(std::fabs(near0.mean) < 2e-8);  // measured 7e-9
  // Away from 0 the error grows with |x| (log2(e) rounded to float), below the 6e-8 |x| by which the
  // rounding of x itself already moves exp(x).
  const ErrorStats wide = relative_errors(table_exp, -87.0f, 88.0f, 1 << 20);
  CATCH_CHECK(wide.worst < 1.5e-6);  // measured 1.33e-6, at x = -87
  const std::vector<float> y = special_values(table_exp);
  const float floor = std::exp(-87.0f);
  for (int i = 0; i < 3; ++i) CATCH_CHECK(std::fabs(y[i] / floor - 1) < 2e-6);  // clamped: normal, not 0
  for (int i = 3; i < 6; ++i) CATCH_CHECK((std::isinf(y[i]) && y[i] > 0));  // overflows like expf
  CATCH_CHECK(std::isnan(y[6]));
  CATCH_CHECK(y[7] == 1.0f);
  // Unclamped, rounding x log2(e) that large leaves a remainder the polynomial turns negative: -inf.
  for (int i = 8; i < 10; ++i) CATCH_CHECK((std::isinf(y[i]) && y[i] > 0));
}
#endif

#if MAMBA_CPU_AVX512_PATH
namespace {
// 2^(dt a) by one of the forward's decays, for n pairs; returns the worst relative error against exp2 of the
// exact product in double.
template <typename Decay>
double worst_decay_error(const std::vector<float>& dt, const std::vector<float>& a, std::vector<float>& y) {
  double worst = 0;
  for (size_t i = 0; i + W <= dt.size(); i += W) {
    Simd<float>::store(y.data() + i, Decay()(Simd<float>::load(dt.data() + i), Simd<float>::load(a.data() + i)));
  }
  for (size_t i = 0; i < dt.size() / W * W; ++i) {
    const double want = std::exp2(static_cast<double>(dt[i]) * static_cast<double>(a[i]));
    worst = std::max(worst, std::fabs((static_cast<double>(y[i]) - want) / want));
  }
  return worst;
}
__attribute__((target("avx512f"), flatten)) double exp2_decay_error(const std::vector<float>& dt,
                                                                   const std::vector<float>& a, std::vector<float>& y) {
  return worst_decay_error<mamba_ext::cpu::Exp2Decay>(dt, a, y);
}
__attribute__((target("avx512f"), flatten)) double clamped_decay_error(const std::vector<float>& dt,
                                                                      const std::vector<float>& a,
                                                                      std::vector<float>& y) {
  return worst_decay_error<mamba_ext::cpu::Exp2DecayClamped>(dt, a, y);
}
}  // namespace

CATCH_TEST_CASE("Exp2Decay and Exp2DecayClamped: 2^(dt a) accurate on [-125, 125], clamped outside", "[cpu_exp]") {
  if (!__builtin_cpu_supports("avx512f")) {
    CATCH_WARN("this CPU has no AVX-512F: the AVX-512 decays are not used here and not checked");
    return;
  }
  // Products over [-125, 125], Exp2Decay's range: dt in [0, 5], a in [-25, 25].
  const int64_t n = 1 << 18;
  std::vector<float> dt(n), a(n), y(n);
  for (int64_t i = 0; i < n; ++i) {
    dt[i] = 5.0f * static_cast<float>(i % 1021) / 1020.0f;
    a[i] = -25.0f + 50.0f * static_cast<float>(i / 1021) / static_cast<float>(n / 1021);
  }
  CATCH_CHECK(exp2_decay_error(dt, a, y) < 2.5e-7);  // the product is exact inside the FMAs
  // The clamped decay rounds dt a to float first, which moves 2^(dt a) by up to 125 * 6e-8 * ln 2 = 5.2e-6.
  CATCH_CHECK(clamped_decay_error(dt, a, y) < 5.5e-6);
  // Outside it the clamped decay stays normal below (2^-125 for -inf and -3e29) and overflows to +inf above;
  // NaN stays NaN.
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> d16(W, 1.0f), a16(W, 0.0f), y16(W);
  const float specials[] = {-inf, -3e29f, -130.0f, 130.0f, 3e29f, inf, std::nanf("")};
  std::copy(std::begin(specials), std::end(specials), a16.begin());
  clamped_decay_error(d16, a16, y16);
  for (int i = 0; i < 3; ++i) CATCH_CHECK(std::fabs(y16[i] / std::exp2(-125.0f) - 1) < 1e-6);
  for (int i = 3; i < 6; ++i) CATCH_CHECK((std::isinf(y16[i]) && y16[i] > 0));
  CATCH_CHECK(std::isnan(y16[6]));
}
#endif

// softplus: the portable vsoftplus and the AVX-512 build's division-free vsoftplus_avx512 against
// log1p(exp(x)) in double (x itself above 20, the reference's threshold).
namespace {
double softplus_reference(float x) { return x > 20.0f ? x : std::log1p(std::exp(static_cast<double>(x))); }

template <typename SoftplusFn>
double worst_softplus_error(SoftplusFn fn, float lo, float hi, int64_t n) {
  std::vector<float> x(n), y(n);
  for (int64_t i = 0; i < n; ++i) x[i] = lo + (hi - lo) * static_cast<float>(i) / static_cast<float>(n - 1);
  for (int64_t i = 0; i + W <= n; i += W) fn(x.data() + i, y.data() + i);
  double worst = 0;
  for (int64_t i = 0; i < n / W * W; ++i) {
    const double want = softplus_reference(x[i]);
    worst = std::max(worst, std::fabs((static_cast<double>(y[i]) - want) / want));
  }
  return worst;
}

void portable_softplus(const float* x, float* y) {
  Simd<float>::store(y, mamba_ext::cpu::vsoftplus(Simd<float>::load(x)));
}
#if MAMBA_CPU_AVX512_PATH
__attribute__((target("avx512f"), flatten)) void avx512_softplus(const float* x, float* y) {
  Simd<float>::store(y, mamba_ext::cpu::vsoftplus_avx512(Simd<float>::load(x)));
}
#endif
}  // namespace

CATCH_TEST_CASE("vsoftplus and vsoftplus_avx512: relative error under 5e-7 on [-20, 80]", "[cpu_exp]") {
  // 2^20 points hit every one of the 32 bins of vsoftplus_avx512's log table many times.
  CATCH_CHECK(worst_softplus_error(portable_softplus, -80.0f, 80.0f, 1 << 20) < 5e-7);  // measured 3.7e-7
  CATCH_CHECK(worst_softplus_error(portable_softplus, -1.0f, 1.0f, 1 << 16) < 5e-7);
#if MAMBA_CPU_AVX512_PATH
  if (!__builtin_cpu_supports("avx512f")) {
    CATCH_WARN("this CPU has no AVX-512F: vsoftplus_avx512 is not used here and not checked");
    return;
  }
  CATCH_CHECK(worst_softplus_error(avx512_softplus, -20.0f, 80.0f, 1 << 20) < 5e-7);  // measured 4.2e-7
  CATCH_CHECK(worst_softplus_error(avx512_softplus, -1.0f, 1.0f, 1 << 16) < 5e-7);
  // Below -20 softplus(x) ~ exp(x), and TableExp's error grows with |x| (1.2e-6 at -80, see above).
  CATCH_CHECK(worst_softplus_error(avx512_softplus, -80.0f, -20.0f, 1 << 18) < 1.5e-6);
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> x(W, 0.0f), y(W);
  const float specials[] = {0.0f, 20.0f, 21.0f, 1e30f, inf, std::nanf(""), -inf};
  std::copy(std::begin(specials), std::end(specials), x.begin());
  avx512_softplus(x.data(), y.data());
  CATCH_CHECK(std::fabs(y[0] / std::log(2.0) - 1) < 2e-7);
  for (int i = 1; i < 5; ++i) CATCH_CHECK(y[i] == x[i]);
  CATCH_CHECK(std::isnan(y[5]));
  CATCH_CHECK((y[6] >= 0.0f && y[6] < 1e-37f));  // exp clamped at -87: 1.6e-38 for softplus(-inf) = 0
#endif
}
