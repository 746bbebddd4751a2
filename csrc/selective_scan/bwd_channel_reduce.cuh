// The backward's sums over the channels of a block (bwd_kernel.cuh): dB and dC of input-dependent B and C
// at every step of a half tile, read from the state/adjoint history in shared memory. No atomics: each
// block writes its own slice, summed later in a fixed order.
#pragma once

#include "selective_scan/scan_common.cuh"

namespace mamba_ext::cuda {

// The backward recomputes a saved chunk in two halves of kHalf steps, so the state history in shared memory
// is half a tile: 35 KB instead of 68 KB for N = 16, three blocks (12 warps) per multiprocessor instead of
// two. The second half needs the state at the middle: the first half's states are advanced once more
// (no stores), half a tile of extra exps.
constexpr int kHalf = kTile / 2;
constexpr int kHistPitch = kHalf + 1;  // per-lane state history: odd pitch, lanes hit distinct banks

// dst[n * L + t] = sum over the block's channels c of hist[c, n, t - tb] * v[c, t] (* w[c, t] if kScaled)
// for the steps t = tb + (lane % 16) of a half tile and the states n0, n0 + 8 with n0 = warp + 4 (lane / 16)
// + 16 m: consecutive lanes read consecutive columns of one history row, each v serves two states, and
// even and odd channels go to separate sums (more independent loads in flight; the order is fixed, so the
// result is deterministic). hist row of (c, n = p*K + k): k*kThreads + c*P + p.
template <int K, bool kScaled>
__device__ __forceinline__ void channel_reduce(float* dst, int64_t L, const float* hist, const float* v_s,
                                               const float* w_s, const Pos& s, const ScanLayout& l, int64_t N,
                                               int len, int tb) {
  const int col = s.lane % kHalf, t = tb + col;
  const int cstride = l.P * kHistPitch;  // from channel c to c + 1 in a history column
  for (int n0 = s.warp + 4 * (s.lane / kHalf); n0 < l.n_pad; n0 += 16) {
    const int n1 = n0 + 8;
    const bool has1 = n1 < l.n_pad;
    const float* h0 = hist + ((n0 % K) * kThreads + n0 / K) * kHistPitch + col;
    const float* h1 = hist + ((n1 % K) * kThreads + n1 / K) * kHistPitch + col;
    float a0 = 0.f, b0 = 0.f, a1 = 0.f, b1 = 0.f;
    const float* vp = v_s + t;  // walked by pointer: two channels per iteration
    const float* wp = w_s + t;
    int c = 0;
    for (; c + 1 < s.nvalid; c += 2) {
      float v0 = vp[0], v1 = vp[kPitch];
      if (kScaled) {
        v0 *= wp[0];
        v1 *= wp[kPitch];
        wp += 2 * kPitch;
      }
      a0 = fmaf(h0[0], v0, a0);
      b0 = fmaf(h0[cstride], v1, b0);
      if (has1) {
        a1 = fmaf(h1[0], v0, a1);
        b1 = fmaf(h1[cstride], v1, b1);
      }
      vp += 2 * kPitch;
      h0 += 2 * cstride;
      h1 += 2 * cstride;
    }
    if (c < s.nvalid) {
      const float v0 = kScaled ? vp[0] * wp[0] : vp[0];
      a0 = fmaf(h0[0], v0, a0);
      if (has1) a1 = fmaf(h1[0], v0, a1);
    }
    if (t < len) {
      if (n0 < N) dst[n0 * L + t] = a0 + b0;
      if (has1 && n1 < N) dst[n1 * L + t] = a1 + b1;
    }
  }
}

}  // namespace mamba_ext::cuda
