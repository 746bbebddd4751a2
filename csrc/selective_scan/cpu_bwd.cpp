// CPU backward of the selective scan. Walks the chunks of each row in reverse; inside a chunk it
// recomputes the states from the saved state entering the chunk (cpu_chunk.h, scan_chunk_recompute), so
// memory beyond inputs and outputs is chunk_states plus a chunk of scratch per thread. Tasks as in the
// forward (cpu_rows.h). Gradients summed over channels or batch go to per-task partial buffers reduced
// afterwards in a fixed order, so results are deterministic for a given thread count (no atomics).
// With per-sequence states (cu_seqlens) a sequence start emits the carried gradient as that sequence's
// dinitial_state row and then carries the previous sequence's dlast_state row (instead of zero).
// Instantiations: 4 input dtypes.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <vector>

#include "common/checks.h"
#include "common/cu_seqlens.h"
#include "selective_scan/cpu_chunk.h"
#include "selective_scan/cpu_rows.h"
#include "selective_scan/scan_args.h"

namespace mamba_ext {
namespace {

// Per-(batch, channel) partial sums and the per-(batch, group, split) input-dependent dB/dC, all in the
// state dtype; summed over batch (and split) once the parallel loop is done.
struct Partials {
  at::Tensor dA, dD, ddelta_bias, dB, dC;  // (batch, dim, N), (batch, dim), (batch, dim), see make_partials
};

// Scratch of one task, carved from one zero-initialized buffer (padded lanes n >= N stay zero): per-channel
// carries and parameter rows, one chunk of B/C and their gradients, the recomputed states and decays, and
// per-step vectors.
template <typename acc_t>
struct Scratch {
  acc_t *g_next, *dA, *A, *B_rows, *C_rows, *dB_rows, *dC_rows;
  acc_t *B_chunk, *C_chunk, *dB_chunk, *dC_chunk, *hs, *as;
  acc_t *u, *x, *dt, *dtu, *y, *z, *dout, *dy, *ddt, *du_scan;
  Scratch(std::vector<acc_t>& buf, int64_t K, int64_t T, int64_t Np) {
    acc_t* q = buf.data();
    for (acc_t** v : {&g_next, &dA, &A, &B_rows, &C_rows, &dB_rows, &dC_rows}) { *v = q; q += K * Np; }
    for (acc_t** v : {&B_chunk, &C_chunk, &dB_chunk, &dC_chunk, &hs, &as}) { *v = q; q += T * Np; }
    for (acc_t** v : {&u, &x, &dt, &dtu, &y, &z, &dout, &dy, &ddt, &du_scan}) { *v = q; q += T; }
  }
  static int64_t size(int64_t K, int64_t T, int64_t Np) { return 7 * K * Np + 6 * T * Np + 10 * T; }
};

// Gradients of one row chunk through the gate: s.dy and dz (written out), and the dD contribution.
template <typename input_t, typename acc_t>
void gate_backward(const SelectiveScanParams& p, int64_t b, int64_t d, int64_t t0, int64_t len, int64_t len_v,
                   Scratch<acc_t>& s, acc_t* dD) {
  const acc_t D = p.D_ptr ? static_cast<const acc_t*>(p.D_ptr)[d] : acc_t(0);
  cpu::load_row<input_t>(p.dout_ptr, p.dout_batch_stride, p.dout_dim_stride, b, d, t0, len, s.dout);
  if (p.z_ptr) cpu::load_row<input_t>(p.z_ptr, p.z_batch_stride, p.z_dim_stride, b, d, t0, len, s.z);
  cpu::gate_backward<acc_t>(len_v, D, s.dout, s.u, s.y, p.z_ptr ? s.z : nullptr, s.dy);
  if (p.z_ptr) {
    auto* dz = static_cast<input_t*>(p.dz_ptr) + (b * p.dim + d) * p.seqlen + t0;
    for (int64_t t = 0; t < len; ++t) dz[t] = static_cast<input_t>(s.z[t]);
  }
  *dD += cpu::dot<acc_t>(s.dy, s.u, len);
}

// du = du_scan + D dy; ddelta = ddt * softplus'(x); and the ddelta_bias contribution.
template <typename input_t, typename acc_t>
void input_backward(const SelectiveScanParams& p, int64_t b, int64_t d, int64_t t0, int64_t len, int64_t len_v,
                    Scratch<acc_t>& s, acc_t* ddelta_bias) {
  const acc_t D = p.D_ptr ? static_cast<const acc_t*>(p.D_ptr)[d] : acc_t(0);
  if (p.delta_softplus) cpu::softplus_backward<acc_t>(len_v, s.x, s.ddt);
  const int64_t offset = (b * p.dim + d) * p.seqlen + t0;
  auto* du = static_cast<input_t*>(p.du_ptr) + offset;
  auto* ddelta = static_cast<input_t*>(p.ddelta_ptr) + offset;
  for (int64_t t = 0; t < len; ++t) du[t] = static_cast<input_t>(s.du_scan[t] + D * s.dy[t]);
  for (int64_t t = 0; t < len; ++t) ddelta[t] = static_cast<input_t>(s.ddt[t]);
  *ddelta_bias += cpu::dot<acc_t>(s.ddt, nullptr, len);
}

// Row `row` of a (rows, dim, N) state tensor for channel d, into Np padded values (zeros when src is null).
template <typename acc_t>
void load_state_row(const void* src, int64_t row, int64_t dim, int64_t d, int64_t N, int64_t Np, acc_t* dst) {
  if (src) {
    const auto* from = static_cast<const acc_t*>(src) + (row * dim + d) * N;
    std::copy(from, from + N, dst);
  } else {
    std::fill(dst, dst + N, acc_t(0));
  }
  std::fill(dst + N, dst + Np, acc_t(0));
}

template <typename acc_t>
void store_state_row(const acc_t* src, int64_t row, int64_t dim, int64_t d, int64_t N, void* dst) {
  std::copy(src, src + N, static_cast<acc_t*>(dst) + (row * dim + d) * N);
}

template <typename input_t, typename acc_t>
void backward_task(const SelectiveScanParams& p, const cpu::TaskRange& r, int64_t splits, Scratch<acc_t> s,
                   const Partials& out) {
  const int64_t T = p.chunk_size, N = p.dstate, Np = cpu::round_up(N, cpu::Simd<acc_t>::kWidth);
  const int64_t K = r.d_end - r.d_begin, row0 = r.b * p.dim + r.d_begin;
  // Per-sequence states of an empty row: dinitial_state was filled with dlast_state (or zeros) beforehand;
  // only the zero parameter gradients remain to be written.
  const bool no_state_rows = p.per_sequence_states && p.seqlen == 0;
  // Rows of the states the row starts from and ends in (differ from row0 with per-sequence states).
  const int64_t first0 = no_state_rows ? row0 : cpu::state_row(p, r.b, 0) * p.dim + r.d_begin;
  const int64_t last0 =
      no_state_rows ? row0 : cpu::state_row(p, r.b, std::max<int64_t>(p.seqlen - 1, 0)) * p.dim + r.d_begin;
  const auto* chunk_states = static_cast<const acc_t*>(p.chunk_states_ptr);
  std::vector<acc_t> dD(K, 0), ddelta_bias(K, 0), h0(Np, 0), h_start(Np, 0);
  cpu::Pieces pieces;
  cpu::load_task_parameters(p, r, Np, s.A, s.B_rows, s.C_rows);
  if (p.dlast_state_ptr && !no_state_rows) {
    cpu::load_padded_rows(p.dlast_state_ptr, last0, K, N, Np, s.g_next);
  } else {
    std::fill(s.g_next, s.g_next + K * Np, acc_t(0));
  }
  for (acc_t* v : {s.dA, s.dB_rows, s.dC_rows}) std::fill(v, v + K * Np, acc_t(0));
  const auto* B_src = static_cast<const input_t*>(p.B_ptr) + r.b * p.B_batch_stride + r.g * p.B_group_stride;
  const auto* C_src = static_cast<const input_t*>(p.C_ptr) + r.b * p.C_batch_stride + r.g * p.C_group_stride;
  // Input-dependent dB/dC partials: (batch, groups, splits, N, seqlen).
  const int64_t part = ((r.b * p.n_groups + r.g) * splits + r.s) * N * p.seqlen;
  for (int64_t c = p.n_chunks - 1; c >= 0; --c) {
    const int64_t t0 = c * T, len = std::min(T, p.seqlen - t0);
    cpu::split_at_sequence_starts(p, r.b, t0, len, pieces);
    if (p.is_variable_B) {
      cpu::load_transposed(B_src + t0, p.B_dstate_stride, len, N, Np, s.B_chunk);
      std::fill(s.dB_chunk, s.dB_chunk + len * Np, acc_t(0));
    }
    if (p.is_variable_C) {
      cpu::load_transposed(C_src + t0, p.C_dstate_stride, len, N, Np, s.C_chunk);
      std::fill(s.dC_chunk, s.dC_chunk + len * Np, acc_t(0));
    }
    for (int64_t k = 0; k < K; ++k) {
      const int64_t d = r.d_begin + k;
      const acc_t* saved = chunk_states + ((row0 + k) * p.n_chunks + c) * N;
      std::copy(saved, saved + N, h0.data());
      const int64_t len_v = cpu::round_up(len, cpu::Simd<acc_t>::kWidth);  // whole vectors
      cpu::discretize_row<input_t>(p, r.b, d, t0, len, s.u, s.x, s.dt, s.dtu);
      int64_t Bs, Cs;
      const acc_t* B = cpu::row_operand(p.is_variable_B, s.B_chunk, s.B_rows, k, Np, &Bs);
      const acc_t* C = cpu::row_operand(p.is_variable_C, s.C_chunk, s.C_rows, k, Np, &Cs);
      acc_t* dB = cpu::row_operand(p.is_variable_B, s.dB_chunk, s.dB_rows, k, Np, &Bs);
      acc_t* dC = cpu::row_operand(p.is_variable_C, s.dC_chunk, s.dC_rows, k, Np, &Cs);
      const acc_t* A = s.A + k * Np;
      // The state entering piece i: at a sequence start zero (with per-sequence states: that sequence's
      // initial state, loaded into h_start for the one call that reads it), else the saved state or the last
      // recomputed one.
      const auto piece_h0 = [&](int64_t i) {
        const int64_t ts = pieces.start[i];
        if (pieces.restart[i]) {
          const void* init = p.per_sequence_states ? p.initial_state_ptr : nullptr;
          load_state_row(init, cpu::state_row(p, r.b, t0 + ts), p.dim, d, N, Np, h_start.data());
          return static_cast<const acc_t*>(h_start.data());
        }
        return static_cast<const acc_t*>(ts == 0 ? h0.data() : s.hs + (ts - 1) * Np);
      };
      for (int64_t i = 0; i < pieces.count(); ++i) {
        const int64_t ts = pieces.start[i];
        cpu::scan_chunk_recompute<acc_t>(pieces.length(i), Np, s.dt + ts, s.dtu + ts, B + ts * Bs, Bs, C + ts * Cs,
                                         Cs, A, piece_h0(i), s.hs + ts * Np, s.as + ts * Np, s.y + ts);
      }
      gate_backward<input_t>(p, r.b, d, t0, len, len_v, s, &dD[k]);
      acc_t* g_next = s.g_next + k * Np;
      for (int64_t i = pieces.count() - 1; i >= 0; --i) {
        const int64_t ts = pieces.start[i];
        cpu::scan_chunk_reverse<acc_t>(pieces.length(i), Np, s.dt + ts, s.u + ts, s.dtu + ts, s.dy + ts, B + ts * Bs,
                                       Bs, C + ts * Cs, Cs, A, piece_h0(i), s.hs + ts * Np, s.as + ts * Np, g_next,
                                       dB + ts * Bs, dC + ts * Cs, s.dA + k * Np, s.ddt + ts, s.du_scan + ts);
        if (pieces.restart[i]) {
          // Nothing flows into the previous sequence; with per-sequence states g_next is this sequence's
          // dinitial_state, and the previous sequence's end receives its own dlast_state.
          if (p.per_sequence_states) {
            store_state_row(g_next, cpu::state_row(p, r.b, t0 + ts), p.dim, d, N, p.dinitial_state_ptr);
            load_state_row(p.dlast_state_ptr, cpu::state_row(p, r.b, t0 + ts - 1), p.dim, d, N, Np, g_next);
          } else {
            std::fill(g_next, g_next + Np, acc_t(0));
          }
        }
      }
      input_backward<input_t>(p, r.b, d, t0, len, len_v, s, &ddelta_bias[k]);
    }
    for (auto [is_variable, chunk, dst] : {std::tuple{p.is_variable_B, s.dB_chunk, out.dB},
                                           std::tuple{p.is_variable_C, s.dC_chunk, out.dC}}) {
      if (!is_variable) continue;
      acc_t* base = dst.template data_ptr<acc_t>() + part + t0;
      for (int64_t t = 0; t < len; ++t)
        for (int64_t n = 0; n < N; ++n) base[n * p.seqlen + t] = chunk[t * Np + n];
    }
  }
  // Per-channel results, unpadded. Constant dB/dC partials are (batch, dim, N).
  const auto unpad = [&](const acc_t* src, void* dst, int64_t first_row) {
    for (int64_t k = 0; k < K; ++k) {
      std::copy(src + k * Np, src + k * Np + N, static_cast<acc_t*>(dst) + (first_row + k) * N);
    }
  };
  if (!no_state_rows) unpad(s.g_next, p.dinitial_state_ptr, first0);
  unpad(s.dA, out.dA.data_ptr(), row0);
  if (!p.is_variable_B) unpad(s.dB_rows, out.dB.data_ptr(), row0);
  if (!p.is_variable_C) unpad(s.dC_rows, out.dC.data_ptr(), row0);
  std::copy(dD.begin(), dD.end(), out.dD.data_ptr<acc_t>() + row0);
  std::copy(ddelta_bias.begin(), ddelta_bias.end(), out.ddelta_bias.data_ptr<acc_t>() + row0);
}

ScanGrads selective_scan_bwd_cpu(const at::Tensor& dout, const OptTensor& dlast_state, const at::Tensor& u,
                                 const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                                 const at::Tensor& C, const OptTensor& D, const OptTensor& z,
                                 const OptTensor& delta_bias, bool delta_softplus, const OptTensor& initial_state,
                                 const OptTensor& seq_idx, const at::Tensor& chunk_states, int64_t chunk_size,
                                 bool /*deterministic*/, const OptTensor& cu_seqlens) {
  const char* op = "selective_scan_bwd";
  const ScanInputs in =
      check_scan_inputs(op, u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, cu_seqlens);
  check_scan_grads(op, in, dout, dlast_state, chunk_states, chunk_size);
  if (cu_seqlens) {
    check_ids_with_cu_seqlens(op, seq_idx);
    cpu_sequence_bounds(op, *cu_seqlens, in.seq_idx, in.seqlen.expect_int());
  }
  SelectiveScanParams p = make_scan_params(in, delta_softplus, chunk_size);
  const at::Tensor dout_t = time_contiguous(dout), states = chunk_states.contiguous();
  const OptTensor dlast = dlast_state ? OptTensor(dlast_state->contiguous()) : std::nullopt;
  const auto state_opts = u.options().dtype(in.state_dtype);
  const int64_t splits = cpu::task_splits(p), Bt = p.batch, Dm = p.dim, N = p.dstate, L = p.seqlen;
  const int64_t G = p.n_groups;
  at::Tensor du = at::empty({Bt, Dm, L}, u.options()), ddelta = at::empty({Bt, Dm, L}, u.options());
  at::Tensor dz = z ? at::empty({Bt, Dm, L}, u.options()) : at::empty({0}, u.options());
  at::Tensor dinitial = at::empty({p.state_rows, Dm, N}, state_opts);
  // Per-sequence states: the kernel writes the rows of non-empty sequences; an empty one passes dlast_state on.
  if (p.per_sequence_states) {
    if (dlast) dinitial.copy_(*dlast); else dinitial.zero_();
  }
  Partials part{at::empty({Bt, Dm, N}, state_opts), at::empty({Bt, Dm}, state_opts), at::empty({Bt, Dm}, state_opts),
                p.is_variable_B ? at::empty({Bt, G, splits, N, L}, state_opts) : at::empty({Bt, Dm, N}, state_opts),
                p.is_variable_C ? at::empty({Bt, G, splits, N, L}, state_opts) : at::empty({Bt, Dm, N}, state_opts)};
  p.dout_batch_stride = dout_t.stride(0);
  p.dout_dim_stride = dout_t.stride(1);
  p.dout_ptr = dout_t.const_data_ptr();
  p.dlast_state_ptr = dlast ? dlast->const_data_ptr() : nullptr;
  p.chunk_states_ptr = const_cast<void*>(states.const_data_ptr());
  p.du_ptr = du.data_ptr();
  p.ddelta_ptr = ddelta.data_ptr();
  p.dz_ptr = dz.data_ptr();
  p.dinitial_state_ptr = dinitial.data_ptr();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, u.scalar_type(), "selective_scan_bwd_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const int64_t K = ceil_div(Dm / G, splits), T = cpu::round_up(p.chunk_size, cpu::Simd<acc_t>::kWidth);
    const int64_t Np = cpu::round_up(N, cpu::Simd<acc_t>::kWidth);
    at::parallel_for(0, Bt * G * splits, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> buf(Scratch<acc_t>::size(K, T, Np), acc_t(0));
      for (int64_t task = begin; task < end; ++task) {
        backward_task<scalar_t, acc_t>(p, cpu::task_range(p, task, splits), splits,
                                       Scratch<acc_t>(buf, K, T, Np), part);
      }
    });
  });
  // Fixed-order reductions of the partials; B/C gradients take B/C's own shape and dtype.
  auto reduce_BC = [&](const at::Tensor& partial, const at::Tensor& orig, bool is_variable) {
    return (is_variable ? partial.sum(2) : partial.sum(0)).to(orig.scalar_type()).view(orig.sizes());
  };
  return {du,
          ddelta,
          part.dA.sum(0),
          reduce_BC(part.dB, B, p.is_variable_B),
          reduce_BC(part.dC, C, p.is_variable_C),
          part.dD.sum(0),
          dz,
          part.ddelta_bias.sum(0),
          dinitial};
}

}  // namespace

TORCH_LIBRARY_IMPL(mamba_ext, CPU, m) { m.impl("selective_scan_bwd", &selective_scan_bwd_cpu); }

}  // namespace mamba_ext
