// CPU forward of the selective scan: out = (sum_n C h + D u) * silu(z), plus the last state and the state
// entering every chunk of kCpuChunkSize steps (what the backward recomputes from; never all states).
// Parallel over (batch, group, channel range) tasks with at::parallel_for; the state recurrence of each
// channel runs in cpu_chunk.h, vectorized over N. Instantiations: 4 input dtypes.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <vector>

#include "common/checks.h"
#include "selective_scan/cpu_chunk.h"
#include "selective_scan/cpu_rows.h"
#include "selective_scan/scan_args.h"

namespace mamba_ext {
namespace {

// Scratch of one task, carved from one zero-initialized buffer (the padded lanes n >= N stay zero).
template <typename acc_t>
struct ForwardScratch {
  acc_t *states, *A, *B_rows, *C_rows, *B_chunk, *C_chunk, *u, *x, *dt, *dtu, *z, *y;
  ForwardScratch(std::vector<acc_t>& buf, int64_t K, int64_t T, int64_t Np) {
    acc_t* q = buf.data();
    for (acc_t** v : {&states, &A, &B_rows, &C_rows}) { *v = q; q += K * Np; }
    for (acc_t** v : {&B_chunk, &C_chunk}) { *v = q; q += T * Np; }
    for (acc_t** v : {&u, &x, &dt, &dtu, &z, &y}) { *v = q; q += T; }
  }
  static int64_t size(int64_t K, int64_t T, int64_t Np) { return 4 * K * Np + 2 * T * Np + 6 * T; }
};

template <typename input_t, typename acc_t>
void forward_task(const SelectiveScanParams& p, const cpu::TaskRange& r, ForwardScratch<acc_t> s) {
  const int64_t T = p.chunk_size, N = p.dstate, Np = cpu::round_up(N, cpu::Simd<acc_t>::kWidth);
  const int64_t K = r.d_end - r.d_begin;
  auto* chunk_states = static_cast<acc_t*>(p.chunk_states_ptr);
  cpu::load_task_parameters(p, r, Np, s.A, s.B_rows, s.C_rows);
  if (p.initial_state_ptr) {
    cpu::load_padded_rows(p.initial_state_ptr, r.b * p.dim + r.d_begin, K, N, Np, s.states);
  } else {
    std::fill(s.states, s.states + K * Np, acc_t(0));
  }
  const auto* B_src = static_cast<const input_t*>(p.B_ptr) + r.b * p.B_batch_stride + r.g * p.B_group_stride;
  const auto* C_src = static_cast<const input_t*>(p.C_ptr) + r.b * p.C_batch_stride + r.g * p.C_group_stride;
  cpu::Pieces pieces;
  for (int64_t c = 0; c < p.n_chunks; ++c) {
    const int64_t t0 = c * T, len = std::min(T, p.seqlen - t0);
    cpu::split_at_sequence_starts(p, r.b, t0, len, pieces);
    if (p.is_variable_B) cpu::load_transposed(B_src + t0, p.B_dstate_stride, len, N, Np, s.B_chunk);
    if (p.is_variable_C) cpu::load_transposed(C_src + t0, p.C_dstate_stride, len, N, Np, s.C_chunk);
    for (int64_t k = 0; k < K; ++k) {
      const int64_t d = r.d_begin + k, row = r.b * p.dim + d;
      acc_t* h = s.states + k * Np;
      std::copy(h, h + N, chunk_states + (row * p.n_chunks + c) * N);
      const int64_t len_v = cpu::round_up(len, cpu::Simd<acc_t>::kWidth);  // whole vectors
      cpu::discretize_row<input_t>(p, r.b, d, t0, len, s.u, s.x, s.dt, s.dtu);
      int64_t Bs, Cs;
      const acc_t* B = cpu::row_operand(p.is_variable_B, s.B_chunk, s.B_rows, k, Np, &Bs);
      const acc_t* C = cpu::row_operand(p.is_variable_C, s.C_chunk, s.C_rows, k, Np, &Cs);
      for (int64_t i = 0; i < pieces.count(); ++i) {
        const int64_t ts = pieces.start[i];
        if (pieces.restart[i]) std::fill(h, h + Np, acc_t(0));
        cpu::scan_chunk_forward<acc_t>(pieces.length(i), Np, s.dt + ts, s.dtu + ts, B + ts * Bs, Bs, C + ts * Cs, Cs,
                                       s.A + k * Np, h, s.y + ts);
      }
      if (p.z_ptr) cpu::load_row<input_t>(p.z_ptr, p.z_batch_stride, p.z_dim_stride, r.b, d, t0, len, s.z);
      const acc_t D = p.D_ptr ? static_cast<const acc_t*>(p.D_ptr)[d] : acc_t(0);
      cpu::gate_forward<acc_t>(len_v, D, s.u, p.z_ptr ? s.z : nullptr, s.y);
      auto* out = static_cast<input_t*>(p.out_ptr) + r.b * p.out_batch_stride + d * p.out_dim_stride + t0;
      for (int64_t t = 0; t < len; ++t) out[t] = static_cast<input_t>(s.y[t]);
    }
  }
  auto* last_state = static_cast<acc_t*>(p.last_state_ptr);
  for (int64_t k = 0; k < K; ++k) {
    std::copy(s.states + k * Np, s.states + k * Np + N, last_state + (r.b * p.dim + r.d_begin + k) * N);
  }
}

template <typename input_t, typename acc_t>
void forward_kernel(const SelectiveScanParams& p) {
  const int64_t splits = cpu::task_splits(p);
  const int64_t K = ceil_div(p.dim / p.n_groups, splits);
  const int64_t Np = cpu::round_up(p.dstate, cpu::Simd<acc_t>::kWidth);
  const int64_t T = cpu::round_up(p.chunk_size, cpu::Simd<acc_t>::kWidth);  // room for whole vectors
  at::parallel_for(0, p.batch * p.n_groups * splits, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf(ForwardScratch<acc_t>::size(K, T, Np), acc_t(0));
    for (int64_t task = begin; task < end; ++task) {
      forward_task<input_t, acc_t>(p, cpu::task_range(p, task, splits), ForwardScratch<acc_t>(buf, K, T, Np));
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> selective_scan_fwd_cpu(
    const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
    const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias, bool delta_softplus,
    const OptTensor& initial_state, const OptTensor& seq_idx, int64_t chunk_size) {
  const char* op = "selective_scan_fwd";
  const ScanInputs in = check_scan_inputs(op, u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx);
  scan_num_chunks(op, in.seqlen, chunk_size);
  SelectiveScanParams p = make_scan_params(in, delta_softplus, chunk_size);
  const auto state_opts = u.options().dtype(in.state_dtype);
  at::Tensor out = at::empty({p.batch, p.dim, p.seqlen}, u.options());
  at::Tensor last_state = at::empty({p.batch, p.dim, p.dstate}, state_opts);
  at::Tensor chunk_states = at::empty({p.batch, p.dim, p.n_chunks, p.dstate}, state_opts);
  p.out_batch_stride = out.stride(0);
  p.out_dim_stride = out.stride(1);
  p.out_ptr = out.data_ptr();
  p.last_state_ptr = last_state.data_ptr();
  p.chunk_states_ptr = chunk_states.data_ptr();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, u.scalar_type(), "selective_scan_fwd_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    forward_kernel<scalar_t, acc_t>(p);
  });
  return {out, last_state, chunk_states};
}

}  // namespace

TORCH_LIBRARY_IMPL(mamba_ext, CPU, m) { m.impl("selective_scan_fwd", &selective_scan_fwd_cpu); }

}  // namespace mamba_ext
