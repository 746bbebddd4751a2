// The selective scan through the C++ API (dispatcher + C++ autograd), against a plain C++ reference that
// runs the recurrence in double with scalar loops.
// Catch2's macros are used with their CATCH_ prefix: torch's headers define a CHECK macro of their own.
#define CATCH_CONFIG_PREFIX_ALL
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cmath>
#include <random>
#include <vector>

#include "ops.h"

namespace {

struct Inputs {
  torch::Tensor u, delta, A, B, C, D, z, delta_bias, h0;
  static constexpr size_t kCount = 9;
  torch::Tensor& operator[](size_t i) {
    torch::Tensor* all[kCount] = {&u, &delta, &A, &B, &C, &D, &z, &delta_bias, &h0};
    return *all[i];
  }
};

Inputs random_inputs(int64_t batch, int64_t dim, int64_t L, int64_t N, int64_t groups, torch::Dtype dtype) {
  auto o = torch::TensorOptions().dtype(dtype);
  return {torch::randn({batch, dim, L}, o),
          torch::randn({batch, dim, L}, o) * 0.5 - 1.0,
          -(torch::rand({dim, N}, o) + 0.5),
          torch::randn({batch, groups, N, L}, o),
          torch::randn({batch, groups, N, L}, o),
          torch::randn({dim}, o),
          torch::randn({batch, dim, L}, o),
          torch::rand({dim}, o) * 0.1,
          torch::randn({batch, dim, N}, o)};
}

// out and last_state of the S6 recurrence with softplus, D, z, delta_bias and an initial state.
std::pair<torch::Tensor, torch::Tensor> reference(const Inputs& in) {
  const auto u = in.u.to(torch::kDouble).contiguous(), delta = in.delta.to(torch::kDouble).contiguous();
  const auto A = in.A.to(torch::kDouble), B = in.B.to(torch::kDouble), C = in.C.to(torch::kDouble);
  const auto D = in.D.to(torch::kDouble), z = in.z.to(torch::kDouble), bias = in.delta_bias.to(torch::kDouble);
  const int64_t batch = u.size(0), dim = u.size(1), L = u.size(2), N = A.size(1), groups = B.size(1);
  auto out = torch::empty({batch, dim, L}, torch::kDouble);
  auto last = in.h0.to(torch::kDouble).clone();
  auto ua = u.accessor<double, 3>(), da = delta.accessor<double, 3>(), za = z.accessor<double, 3>();
  auto Aa = A.accessor<double, 2>();
  auto Ba = B.accessor<double, 4>(), Ca = C.accessor<double, 4>();
  auto oa = out.accessor<double, 3>(), ha = last.accessor<double, 3>();
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t d = 0; d < dim; ++d) {
      const int64_t g = d / (dim / groups);
      for (int64_t t = 0; t < L; ++t) {
        const double x = da[b][d][t] + bias[d].item<double>();
        const double dt = x <= 20 ? std::log1p(std::exp(x)) : x;
        double y = D[d].item<double>() * ua[b][d][t];
        for (int64_t n = 0; n < N; ++n) {
          ha[b][d][n] = std::exp(dt * Aa[d][n]) * ha[b][d][n] + dt * Ba[b][g][n][t] * ua[b][d][t];
          y += Ca[b][g][n][t] * ha[b][d][n];
        }
        const double zt = za[b][d][t];
        oa[b][d][t] = y * zt / (1 + std::exp(-zt));
      }
    }
  }
  return {out, last};
}

double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  const auto ad = a.to(torch::kDouble), bd = b.to(torch::kDouble);
  return ((ad - bd).norm() / bd.norm()).item<double>();
}

}  // namespace

CATCH_TEST_CASE("selective_scan forward matches the C++ reference", "[selective_scan]") {
  torch::manual_seed(static_cast<uint64_t>(std::random_device{}()));
  for (int64_t L : {1, 7, 300}) {
    const Inputs in = random_inputs(2, 4, L, 5, 2, torch::kFloat);
    auto [out, last] =
        mamba_ext::selective_scan(in.u, in.delta, in.A, in.B, in.C, in.D, in.z, in.delta_bias, true, in.h0);
    auto [ref_out, ref_last] = reference(in);
    CATCH_CHECK(rel_err(out, ref_out) < 1e-5);
    CATCH_CHECK(rel_err(last, ref_last) < 1e-5);
  }
}

CATCH_TEST_CASE("selective_scan backward matches finite differences of the C++ reference", "[selective_scan]") {
  torch::manual_seed(static_cast<uint64_t>(std::random_device{}()));
  Inputs in = random_inputs(1, 2, 140, 3, 1, torch::kDouble);  // crosses a CPU chunk boundary
  for (size_t i = 0; i < Inputs::kCount; ++i) in[i].requires_grad_(true);
  auto [out, last] =
      mamba_ext::selective_scan(in.u, in.delta, in.A, in.B, in.C, in.D, in.z, in.delta_bias, true, in.h0);
  const auto w_out = torch::randn_like(out), w_last = torch::randn_like(last);
  std::vector<torch::Tensor> inputs;
  for (size_t i = 0; i < Inputs::kCount; ++i) inputs.push_back(in[i]);
  const auto grads = torch::autograd::grad({(out * w_out).sum() + (last * w_last).sum()}, inputs);
  torch::NoGradGuard no_grad;
  auto ref_loss = [&](const Inputs& x) {
    auto [o, h] = reference(x);
    return ((o * w_out).sum() + (h * w_last).sum()).item<double>();
  };
  // Central differences of the reference along a random direction per input.
  for (size_t i = 0; i < Inputs::kCount; ++i) {
    const auto dir = torch::randn_like(inputs[i]);
    const double eps = 1e-6;
    Inputs plus = in, minus = in;
    plus[i] = inputs[i].detach() + eps * dir;
    minus[i] = inputs[i].detach() - eps * dir;
    const double numeric = (ref_loss(plus) - ref_loss(minus)) / (2 * eps);
    const double analytic = (grads[i] * dir).sum().item<double>();
    CATCH_INFO("input " << i << ": analytic " << analytic << " numeric " << numeric);
    CATCH_CHECK(std::abs(analytic - numeric) <= 1e-6 * (1 + std::abs(numeric)));
  }
}

CATCH_TEST_CASE("selective_scan rejects a bad argument with the op and argument named", "[selective_scan]") {
  const Inputs in = random_inputs(1, 4, 5, 3, 1, torch::kFloat);
  const auto bad_D = torch::randn({5});
  CATCH_CHECK_THROWS_WITH(mamba_ext::selective_scan(in.u, in.delta, in.A, in.B, in.C, bad_D),
                    Catch::Contains("mamba_ext.selective_scan: D must have shape"));
}

CATCH_TEST_CASE("selective_scan with cu_seqlens equals each sequence alone, with per-sequence states",
                "[selective_scan]") {
  torch::manual_seed(3);
  const std::vector<int64_t> bounds = {0, 5, 5, 140, 150};  // an empty sequence, one across the CPU chunk
  const int64_t n_seqs = static_cast<int64_t>(bounds.size()) - 1, dim = 4, N = 3;
  Inputs in = random_inputs(1, dim, bounds.back(), N, 2, torch::kFloat);
  in.h0 = torch::randn({n_seqs, dim, N}).requires_grad_();
  const auto cu = torch::tensor(bounds, torch::kInt);
  auto [out, last] = mamba_ext::selective_scan(in.u, in.delta, in.A, in.B, in.C, in.D, in.z, in.delta_bias, true,
                                               in.h0, std::nullopt, cu);
  CATCH_REQUIRE(last.sizes() == torch::IntArrayRef({n_seqs, dim, N}));
  for (int64_t i = 0; i < n_seqs; ++i) {
    const auto piece = [&](const torch::Tensor& t) { return t.narrow(-1, bounds[i], bounds[i + 1] - bounds[i]); };
    auto [out_i, last_i] = mamba_ext::selective_scan(piece(in.u), piece(in.delta), in.A, piece(in.B), piece(in.C),
                                                     in.D, piece(in.z), in.delta_bias, true, in.h0.narrow(0, i, 1));
    if (out_i.numel() > 0) CATCH_CHECK(rel_err(piece(out), out_i) < 1e-6);
    CATCH_CHECK(rel_err(last.narrow(0, i, 1), last_i) < 1e-6);
  }
  // The empty sequence passes the gradient of its last state straight to its initial state.
  last.sum().backward();
  CATCH_CHECK(torch::equal(in.h0.grad()[1], torch::ones({dim, N})));
}
