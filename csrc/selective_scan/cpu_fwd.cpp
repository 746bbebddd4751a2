// CPU forward of the selective scan: out = (sum_n C h + D u) * silu(z), plus the last state and the state
// entering every chunk of kCpuChunkSize steps (what the backward recomputes from; never all states).
// Parallel over (batch, group, channel range) tasks with at::parallel_for; inside a task the recurrence
// runs for W channels at once, one per vector lane (cpu_chunk.h, scan_chunk_forward_lanes). With
// per-sequence states (cu_seqlens) a sequence start saves the state reached so far as the previous
// sequence's last_state row and reloads the new sequence's initial_state row.
// Instantiations: 4 input dtypes x 4 (B, C input-dependent or constant).
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "common/checks.h"
#include "common/cu_seqlens.h"
#include "selective_scan/cpu_chunk.h"
#include "selective_scan/cpu_rows.h"
#include "selective_scan/scan_args.h"

namespace mamba_ext {
namespace {

// Scratch of one task, carved from one zero-initialized buffer. A task's channels go in groups of W (the
// vector width), one channel per lane; a group's last lanes may be unused (their A and inputs stay zero,
// so their state stays zero). Per group: the state, A and constant B/C as N x W. Per visit (below): the
// transposed input-dependent B/C of its chunks (steps x N). Per chunk: W rows of per-step values, and the
// lane-major dt, dt*u and y (len x W).
template <typename acc_t>
struct ForwardScratch {
  static constexpr int64_t W = cpu::Simd<acc_t>::kWidth;
  acc_t *states, *A, *B_lanes, *C_lanes, *B_chunk, *C_chunk;
  acc_t *u, *x, *dt, *dtu, *z, *y;     // W rows of T
  acc_t *dt_lanes, *dtu_lanes, *y_lanes;  // T x W
  // Chunks a group runs through per visit before the task's next group: its rows are read that many chunks
  // at a time, while the visit's B/C, transposed once, serve every group. Up to 8, as long as the visit's
  // B/C stay within 128 KB (L2). A/B against one chunk per visit (v8 -> v9): forward -2..3% at
  // (1, 1536, 2048), median -11% at (8, 768, 1024); transposing B/C again for each group (one visit per group
  // and row) was slower.
  static int64_t visit_chunks(int64_t T, int64_t N) {
    const int64_t fit = (int64_t(128) << 10) / (2 * T * N * int64_t(sizeof(acc_t)));
    return std::clamp<int64_t>(fit, 1, 8);
  }
  ForwardScratch(std::vector<acc_t>& buf, int64_t groups, int64_t T, int64_t N) {
    acc_t* q = buf.data();
    for (acc_t** v : {&states, &A, &B_lanes, &C_lanes}) { *v = q; q += groups * N * W; }
    for (acc_t** v : {&B_chunk, &C_chunk}) { *v = q; q += visit_chunks(T, N) * T * N; }
    for (acc_t** v : {&u, &x, &dt, &dtu, &z, &y, &dt_lanes, &dtu_lanes, &y_lanes}) { *v = q; q += W * T; }
  }
  static int64_t size(int64_t groups, int64_t T, int64_t N) {
    return 4 * groups * N * W + 2 * visit_chunks(T, N) * T * N + 9 * T * W;
  }
};

// rows[l * T + t] -> lanes[t * W + l] for t < len, in W x W blocks (T is a multiple of W, so whole blocks
// stay inside both buffers); lanes l >= count get zeros.
template <typename acc_t>
MAMBA_INLINE void rows_to_lanes(const acc_t* rows, int64_t T, int64_t len, int64_t count, acc_t* lanes) {
  using S = cpu::Simd<acc_t>;
  constexpr int64_t W = S::kWidth;
  for (int64_t t0 = 0; t0 < len; t0 += W) {
    typename S::vec v[W];
    for (int64_t l = 0; l < W; ++l) v[l] = l < count ? S::load(rows + l * T + t0) : typename S::vec{};
    cpu::transpose_block<acc_t>(v);
    for (int64_t j = 0; j < W; ++j) S::store(lanes + (t0 + j) * W, v[j]);
  }
}

// The inverse: lanes[t * W + l] -> rows[l * T + t] for t < len and the first count rows.
template <typename acc_t>
MAMBA_INLINE void lanes_to_rows(const acc_t* lanes, int64_t T, int64_t len, int64_t count, acc_t* rows) {
  using S = cpu::Simd<acc_t>;
  constexpr int64_t W = S::kWidth;
  for (int64_t t0 = 0; t0 < len; t0 += W) {
    typename S::vec v[W];
    for (int64_t j = 0; j < W; ++j) v[j] = S::load(lanes + (t0 + j) * W);
    cpu::transpose_block<acc_t>(v);
    for (int64_t l = 0; l < count; ++l) S::store(rows + l * T + t0, v[l]);
  }
}

// A (dim, N) parameter or (batch, dim, N) state, rows first .. first + count, as N x W lanes.
template <typename acc_t>
void load_lanes(const void* src, int64_t first, int64_t count, int64_t N, acc_t* lanes) {
  constexpr int64_t W = cpu::Simd<acc_t>::kWidth;
  const auto* rows = static_cast<const acc_t*>(src) + first * N;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t l = 0; l < W; ++l) lanes[n * W + l] = l < count ? rows[l * N + n] : acc_t(0);
}

// The lanes' state (N x W) into rows of a (.., N) tensor: row l at dst + l * row_stride.
template <typename acc_t>
void store_lanes(const acc_t* lanes, int64_t count, int64_t N, acc_t* dst, int64_t row_stride) {
  constexpr int64_t W = cpu::Simd<acc_t>::kWidth;
  for (int64_t l = 0; l < count; ++l)
    for (int64_t n = 0; n < N; ++n) dst[l * row_stride + n] = lanes[n * W + l];
}

// At a sequence start (token t of batch row b): the lanes' state h (channels d0 .. d0 + count) becomes the
// new sequence's initial state, or zero; with per-sequence states the state reached so far is first stored
// as the previous sequence's last state.
template <typename acc_t>
void restart_lanes(const SelectiveScanParams& p, int64_t b, int64_t t, int64_t d0, int64_t count, acc_t* h) {
  constexpr int64_t W = cpu::Simd<acc_t>::kWidth;
  const int64_t N = p.dstate;
  if (p.per_sequence_states) {
    auto* last_state = static_cast<acc_t*>(p.last_state_ptr);
    store_lanes(h, count, N, last_state + (cpu::state_row(p, b, t - 1) * p.dim + d0) * N, N);
    if (p.initial_state_ptr) {
      load_lanes(p.initial_state_ptr, cpu::state_row(p, b, t) * p.dim + d0, count, N, h);
      return;
    }
  }
  std::fill(h, h + N * W, acc_t(0));
}

// The lane-parallel forward over one piece: the AVX-512 build of the loop for fp32 where the CPU has it,
// else the portable one (target clones).
template <typename acc_t, bool kVariableB, bool kVariableC>
void forward_lanes(int64_t len, int64_t N, const acc_t* dt, const acc_t* dtu, const acc_t* B, const acc_t* C,
                   const acc_t* A, acc_t* h, acc_t* y, const cpu::Prefetches& prefetch) {
  const int64_t B_t_stride = kVariableB ? N : 0, C_t_stride = kVariableC ? N : 0;
#if MAMBA_CPU_AVX512_PATH
  if constexpr (std::is_same_v<acc_t, float>) {
    if (cpu::cpu_has_avx512f()) {
      cpu::scan_chunk_forward_lanes_avx512<kVariableB, kVariableC>(len, N, dt, dtu, B, B_t_stride, C, C_t_stride, A,
                                                                   h, y, prefetch);
      return;
    }
  }
#endif
  cpu::scan_chunk_forward_lanes<acc_t, kVariableB, kVariableC>(len, N, dt, dtu, B, B_t_stride, C, C_t_stride, A, h,
                                                               y, prefetch);
}

// The recurrence over one piece of a chunk for one group, with B/C input-dependent or constant.
template <typename acc_t>
void scan_piece(const SelectiveScanParams& p, int64_t len, const acc_t* dt, const acc_t* dtu, const acc_t* B,
                const acc_t* C, const acc_t* A, acc_t* h, acc_t* y, const cpu::Prefetches& prefetch) {
  const int64_t N = p.dstate;
  const bool vb = p.is_variable_B, vc = p.is_variable_C;
  if (vb && vc) forward_lanes<acc_t, true, true>(len, N, dt, dtu, B, C, A, h, y, prefetch);
  if (vb && !vc) forward_lanes<acc_t, true, false>(len, N, dt, dtu, B, C, A, h, y, prefetch);
  if (!vb && vc) forward_lanes<acc_t, false, true>(len, N, dt, dtu, B, C, A, h, y, prefetch);
  if (!vb && !vc) forward_lanes<acc_t, false, false>(len, N, dt, dtu, B, C, A, h, y, prefetch);
}

// One group of channels (d0 .. d0 + count, lanes of the scratch at off) over chunk c, steps [t0, t0 + len).
// next: the rows whose u and delta are read after this chunk (count 0: none).
struct GroupChunk {
  int64_t d0, count, off, c, t0, len;
};
struct NextRows {
  int64_t d, t, len, count;
};

// Saves the state entering the chunk, discretizes the group's rows into lane order, runs the recurrence over
// the chunk's pieces and gates and stores the output. B and C point at the chunk's first step (transposed,
// input-dependent) or at the group's constant lanes.
template <typename input_t, typename acc_t>
MAMBA_CPU_CLONES void forward_chunk(const SelectiveScanParams& p, int64_t b, ForwardScratch<acc_t> s, int64_t T,
                                    const GroupChunk& k, const NextRows& next, const acc_t* B, const acc_t* C,
                                    cpu::Pieces& pieces, std::vector<const char*>& lines) {
  constexpr int64_t W = cpu::Simd<acc_t>::kWidth;
  const int64_t N = p.dstate, t0 = k.t0, len = k.len;
  acc_t* h = s.states + k.off;
  cpu::split_at_sequence_starts(p, b, t0, len, pieces);
  if (auto* chunk_states = static_cast<acc_t*>(p.chunk_states_ptr)) {
    store_lanes(h, k.count, N, chunk_states + ((b * p.dim + k.d0) * p.n_chunks + k.c) * N, p.n_chunks * N);
  }
  // Rows are visited a few chunks at a time with the task's other channels in between, which the hardware
  // prefetcher cannot follow. The scan asks for what comes after it (cpu::Prefetches): the rows' z (read after
  // the scan) and output (written then; a read prefetch leaves the line exclusive, ready for the store), and
  // the next rows' u and delta. A/B (v8): forward -8% at (1, 1536, 2048), -20% at (8, 768, 1024) with the
  // requests issued here a row at a time; spread over the scan's steps (v12) they no longer stall on the
  // line-fill buffers, where perf had found ~10% of the forward.
  lines.clear();
  const acc_t* u_rows[W];
  // fp32 output rows go out with non-temporal stores (cpu::stream_row) where AVX-512 runs: the lines are not
  // read first, and not prefetched. A/B (v12): forward -0.3 ms at (8, 768, 1024), unchanged at (1, 1536, 2048).
#if MAMBA_CPU_AVX512_PATH
  const bool stream_out = std::is_same_v<input_t, float> && cpu::cpu_has_avx512f();
#else
  constexpr bool stream_out = false;
#endif
  for (int64_t l = 0; l < k.count; ++l) {
    const int64_t d = k.d0 + l;
    if (p.z_ptr) cpu::append_row_lines<input_t>(lines, p.z_ptr, p.z_batch_stride, p.z_dim_stride, b, d, t0, len);
    if (!stream_out) {
      cpu::append_row_lines<input_t>(lines, p.out_ptr, p.out_batch_stride, p.out_dim_stride, b, d, t0, len);
    }
    if (l < next.count) {
      cpu::append_row_lines<input_t>(lines, p.u_ptr, p.u_batch_stride, p.u_dim_stride, b, next.d + l, next.t,
                                     next.len);
      cpu::append_row_lines<input_t>(lines, p.delta_ptr, p.delta_batch_stride, p.delta_dim_stride, b, next.d + l,
                                     next.t, next.len);
    }
    // u and delta read where they lie (fp32 chunks of whole vectors), else converted into the scratch rows.
    u_rows[l] = cpu::row_view<input_t>(p.u_ptr, p.u_batch_stride, p.u_dim_stride, b, d, t0, len, s.u + l * T);
    const acc_t* delta = cpu::row_view<input_t>(p.delta_ptr, p.delta_batch_stride, p.delta_dim_stride, b, d, t0,
                                                len, s.x + l * T);
    const acc_t bias = p.delta_bias_ptr ? static_cast<const acc_t*>(p.delta_bias_ptr)[d] : acc_t(0);
    cpu::discretize<acc_t>(cpu::round_up(len, W), p.delta_softplus, u_rows[l], delta, bias, s.dt + l * T,
                           s.dtu + l * T);
  }
  rows_to_lanes(s.dt, T, len, k.count, s.dt_lanes);
  rows_to_lanes(s.dtu, T, len, k.count, s.dtu_lanes);
  for (int64_t i = 0; i < pieces.count(); ++i) {
    const int64_t ts = pieces.start[i];
    if (pieces.restart[i]) restart_lanes(p, b, t0 + ts, k.d0, k.count, h);
    // Every piece asks for the lines in proportion to its length.
    const int64_t n_lines = static_cast<int64_t>(lines.size());
    const int64_t first = n_lines * ts / len, last = n_lines * (ts + pieces.length(i)) / len;
    scan_piece(p, pieces.length(i), s.dt_lanes + ts * W, s.dtu_lanes + ts * W,
               p.is_variable_B ? B + ts * N : B, p.is_variable_C ? C + ts * N : C, s.A + k.off, h,
               s.y_lanes + ts * W, cpu::Prefetches{lines.data() + first, last - first});
  }
  lanes_to_rows(s.y_lanes, T, len, k.count, s.y);
  for (int64_t l = 0; l < k.count; ++l) {
    const int64_t d = k.d0 + l;
    acc_t* y = s.y + l * T;
    const acc_t* z =
        p.z_ptr ? cpu::row_view<input_t>(p.z_ptr, p.z_batch_stride, p.z_dim_stride, b, d, t0, len, s.z) : nullptr;
    const acc_t D = p.D_ptr ? static_cast<const acc_t*>(p.D_ptr)[d] : acc_t(0);
    cpu::gate_forward<acc_t>(cpu::round_up(len, W), D, u_rows[l], z, y);
    auto* out = static_cast<input_t*>(p.out_ptr) + b * p.out_batch_stride + d * p.out_dim_stride + t0;
#if MAMBA_CPU_AVX512_PATH
    if constexpr (std::is_same_v<input_t, float>) {
      if (stream_out) {
        cpu::stream_row(y, len, out);
        continue;
      }
    }
#endif
    for (int64_t t = 0; t < len; ++t) out[t] = static_cast<input_t>(y[t]);
  }
}

template <typename input_t, typename acc_t>
MAMBA_CPU_CLONES void forward_task(const SelectiveScanParams& p, const cpu::TaskRange& r, ForwardScratch<acc_t> s,
                                   int64_t T) {
  constexpr int64_t W = cpu::Simd<acc_t>::kWidth;
  const int64_t N = p.dstate, K = r.d_end - r.d_begin, groups = ceil_div(K, W);
  // Per-sequence states of an empty row: last_state was filled with initial_state (or zeros) beforehand.
  if (p.per_sequence_states && p.seqlen == 0) return;
  // Rows of the states the row starts from and ends in (with per-sequence states: those of its first and
  // last sequences).
  const int64_t first0 = cpu::state_row(p, r.b, 0) * p.dim + r.d_begin;
  const int64_t last0 = cpu::state_row(p, r.b, std::max<int64_t>(p.seqlen - 1, 0)) * p.dim + r.d_begin;
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t d0 = r.d_begin + g * W, count = std::min(W, r.d_end - d0), off = g * N * W;
    load_lanes(p.A_ptr, d0, count, N, s.A + off);
    if (!p.is_variable_B) load_lanes(p.B_ptr, d0, count, N, s.B_lanes + off);
    if (!p.is_variable_C) load_lanes(p.C_ptr, d0, count, N, s.C_lanes + off);
    if (p.initial_state_ptr) {
      load_lanes(p.initial_state_ptr, first0 + g * W, count, N, s.states + off);
    } else {
      std::fill(s.states + off, s.states + off + N * W, acc_t(0));
    }
  }
  const auto* B_src = static_cast<const input_t*>(p.B_ptr) + r.b * p.B_batch_stride + r.g * p.B_group_stride;
  const auto* C_src = static_cast<const input_t*>(p.C_ptr) + r.b * p.C_batch_stride + r.g * p.C_group_stride;
  const auto chunk_len = [&](int64_t c) {
    return c < p.n_chunks ? std::min(p.chunk_size, p.seqlen - c * p.chunk_size) : int64_t(0);
  };
  cpu::Pieces pieces;
  std::vector<const char*> lines;  // to prefetch during a chunk's scan
  const int64_t visit = ForwardScratch<acc_t>::visit_chunks(T, N);
  for (int64_t c0 = 0; c0 < p.n_chunks; c0 += visit) {
    const int64_t c1 = std::min(p.n_chunks, c0 + visit), s0 = c0 * p.chunk_size;
    const int64_t span = std::min(p.seqlen, c1 * p.chunk_size) - s0;
    if (p.is_variable_B) cpu::load_transposed(B_src + s0, p.B_dstate_stride, span, N, N, s.B_chunk);
    if (p.is_variable_C) cpu::load_transposed(C_src + s0, p.C_dstate_stride, span, N, N, s.C_chunk);
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t d0 = r.d_begin + g * W, off = g * N * W;
      for (int64_t c = c0; c < c1; ++c) {
        // Read next: this group's next chunk, else the next group's first chunk of the visit, else the first
        // group's first chunk of the next visit.
        const bool same_group = c + 1 < c1, next_group = !same_group && g + 1 < groups;
        const int64_t dn = same_group ? d0 : next_group ? d0 + W : r.d_begin;
        const int64_t cn = same_group ? c + 1 : next_group ? c0 : c1;
        const int64_t t0 = c * p.chunk_size;
        const NextRows next{dn, cn * p.chunk_size, chunk_len(cn), chunk_len(cn) > 0 ? std::min(W, r.d_end - dn) : 0};
        forward_chunk<input_t, acc_t>(p, r.b, s, T, GroupChunk{d0, std::min(W, r.d_end - d0), off, c, t0, chunk_len(c)},
                                      next, p.is_variable_B ? s.B_chunk + (t0 - s0) * N : s.B_lanes + off,
                                      p.is_variable_C ? s.C_chunk + (t0 - s0) * N : s.C_lanes + off, pieces,
                                      lines);
      }
    }
  }
  auto* last_state = static_cast<acc_t*>(p.last_state_ptr);
  for (int64_t g = 0; g < groups; ++g) {
    store_lanes(s.states + g * N * W, std::min(W, K - g * W), N, last_state + (last0 + g * W) * N, N);
  }
}

template <typename input_t, typename acc_t>
void forward_kernel(const SelectiveScanParams& p) {
  const int64_t splits = cpu::task_splits(p);
  const int64_t groups = ceil_div(ceil_div(p.dim / p.n_groups, splits), cpu::Simd<acc_t>::kWidth);
  const int64_t T = cpu::round_up(p.chunk_size, cpu::Simd<acc_t>::kWidth);  // room for whole vectors
  at::parallel_for(0, p.batch * p.n_groups * splits, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf(ForwardScratch<acc_t>::size(groups, T, p.dstate), acc_t(0));
    for (int64_t task = begin; task < end; ++task) {
      forward_task<input_t, acc_t>(p, cpu::task_range(p, task, splits), ForwardScratch<acc_t>(buf, groups, T, p.dstate),
                                   T);
    }
#if MAMBA_CPU_AVX512_PATH
    _mm_sfence();  // the output's non-temporal stores are visible before the thread reports its work done
#endif
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> selective_scan_fwd_cpu(
    const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
    const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias, bool delta_softplus,
    const OptTensor& initial_state, const OptTensor& seq_idx, int64_t chunk_size, const OptTensor& cu_seqlens,
    bool save_states) {
  const char* op = "selective_scan_fwd";
  const ScanInputs in =
      check_scan_inputs(op, u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, cu_seqlens);
  scan_num_chunks(op, in.seqlen, chunk_size);
  if (cu_seqlens) {
    check_ids_with_cu_seqlens(op, seq_idx);
    cpu_sequence_bounds(op, *cu_seqlens, in.seq_idx, in.seqlen.expect_int());
  }
  SelectiveScanParams p = make_scan_params(in, delta_softplus, chunk_size);
  const auto state_opts = u.options().dtype(in.state_dtype);
  at::Tensor out = at::empty({p.batch, p.dim, p.seqlen}, u.options());
  at::Tensor last_state = at::empty({p.state_rows, p.dim, p.dstate}, state_opts);
  // Per-sequence states: the kernel writes the rows of non-empty sequences; an empty one keeps its initial state.
  if (p.per_sequence_states) {
    if (in.initial_state) last_state.copy_(*in.initial_state); else last_state.zero_();
  }
  at::Tensor chunk_states = at::empty({p.batch, p.dim, save_states ? p.n_chunks : 0, p.dstate}, state_opts);
  p.out_batch_stride = out.stride(0);
  p.out_dim_stride = out.stride(1);
  p.out_ptr = out.data_ptr();
  p.last_state_ptr = last_state.data_ptr();
  p.chunk_states_ptr = save_states ? chunk_states.data_ptr() : nullptr;  // null: not stored
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, u.scalar_type(), "selective_scan_fwd_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    forward_kernel<scalar_t, acc_t>(p);
  });
  return {out, last_state, chunk_states};
}

}  // namespace

TORCH_LIBRARY_IMPL(mamba_ext, CPU, m) { m.impl("selective_scan_fwd", &selective_scan_fwd_cpu); }

}  // namespace mamba_ext
