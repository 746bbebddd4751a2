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

template <typename input_t, typename acc_t>
void write_out_row(const SelectiveScanParams& p, int64_t b, int64_t d, int64_t t0, int64_t len,
                   const acc_t* u, const acc_t* y) {
  const acc_t D = p.D_ptr ? static_cast<const acc_t*>(p.D_ptr)[d] : acc_t(0);
  auto* out = static_cast<input_t*>(p.out_ptr) + b * p.out_batch_stride + d * p.out_dim_stride + t0;
  const auto* z = p.z_ptr ? static_cast<const input_t*>(p.z_ptr) + b * p.z_batch_stride + d * p.z_dim_stride + t0
                          : nullptr;
  for (int64_t t = 0; t < len; ++t) {
    acc_t v = y[t] + D * u[t];
    if (z) {
      const acc_t zt = static_cast<acc_t>(z[t]);
      v *= zt * cpu::sigmoid(zt);
    }
    out[t] = static_cast<input_t>(v);
  }
}

template <typename input_t, typename acc_t>
void forward_task(const SelectiveScanParams& p, const cpu::TaskRange& r, std::vector<acc_t>& buf) {
  const int64_t T = p.chunk_size, N = p.dstate, K = r.d_end - r.d_begin;
  acc_t* states = buf.data();  // K x N: the running state of each channel of the task
  acc_t* B_chunk = states + K * N;
  acc_t* C_chunk = B_chunk + T * N;
  acc_t* u = C_chunk + T * N;
  acc_t* dt = u + T;
  acc_t* dtu = dt + T;
  acc_t* y = dtu + T;
  const auto* A = static_cast<const acc_t*>(p.A_ptr);
  auto* chunk_states = static_cast<acc_t*>(p.chunk_states_ptr);
  for (int64_t k = 0; k < K; ++k) {
    const int64_t row = r.b * p.dim + r.d_begin + k;
    for (int64_t n = 0; n < N; ++n) {
      states[k * N + n] = p.initial_state_ptr ? static_cast<const acc_t*>(p.initial_state_ptr)[row * N + n] : 0;
    }
  }
  const auto* B_src = static_cast<const input_t*>(p.B_ptr) + r.b * p.B_batch_stride + r.g * p.B_group_stride;
  const auto* C_src = static_cast<const input_t*>(p.C_ptr) + r.b * p.C_batch_stride + r.g * p.C_group_stride;
  for (int64_t c = 0; c < p.n_chunks; ++c) {
    const int64_t t0 = c * T, len = std::min(T, p.seqlen - t0);
    if (p.is_variable_B) cpu::load_transposed(B_src + t0, p.B_dstate_stride, len, N, B_chunk);
    if (p.is_variable_C) cpu::load_transposed(C_src + t0, p.C_dstate_stride, len, N, C_chunk);
    for (int64_t k = 0; k < K; ++k) {
      const int64_t d = r.d_begin + k, row = r.b * p.dim + d;
      acc_t* h = states + k * N;
      std::copy(h, h + N, chunk_states + (row * p.n_chunks + c) * N);
      cpu::load_dt<input_t>(p, r.b, d, t0, len, u, dt, dtu);
      int64_t Bs, Cs;
      const acc_t* B = cpu::row_operand(p.is_variable_B, B_chunk, p.B_ptr, d, N, &Bs);
      const acc_t* C = cpu::row_operand(p.is_variable_C, C_chunk, p.C_ptr, d, N, &Cs);
      cpu::scan_chunk_forward<acc_t>(len, N, dt, dtu, B, Bs, C, Cs, A + d * N, h, y);
      write_out_row<input_t>(p, r.b, d, t0, len, u, y);
    }
  }
  auto* last_state = static_cast<acc_t*>(p.last_state_ptr);
  for (int64_t k = 0; k < K; ++k) {
    std::copy(states + k * N, states + (k + 1) * N, last_state + (r.b * p.dim + r.d_begin + k) * N);
  }
}

template <typename input_t, typename acc_t>
void forward_kernel(const SelectiveScanParams& p) {
  const int64_t splits = cpu::task_splits(p);
  const int64_t max_channels = ceil_div(p.dim / p.n_groups, splits);
  at::parallel_for(0, p.batch * p.n_groups * splits, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf((max_channels + 2 * p.chunk_size) * p.dstate + 4 * p.chunk_size);
    for (int64_t task = begin; task < end; ++task) {
      forward_task<input_t, acc_t>(p, cpu::task_range(p, task, splits), buf);
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> selective_scan_fwd_cpu(
    const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
    const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias, bool delta_softplus,
    const OptTensor& initial_state, int64_t chunk_size) {
  const char* op = "selective_scan_fwd";
  const ScanInputs in = check_scan_inputs(op, u, delta, A, B, C, D, z, delta_bias, initial_state);
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
