// Host-side helpers shared by the CUDA forward and backward wrappers (cuda_fwd.cu, cuda_bwd.cu): argument
// checks specific to the CUDA kernels, the launch layout for the current device, and error reporting.
#pragma once

#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <utility>

#include "common/checks.h"
#include "selective_scan/scan_args.h"
#include "selective_scan/scan_common.cuh"

namespace mamba_ext::cuda {

inline void check_cuda_inputs(const char* op, const at::Tensor& u, int64_t chunk_size) {
  MAMBA_CHECK(u.scalar_type() != at::kDouble, op,
              "u is float64, which the CUDA kernels do not support (they keep fp32 states); use float32, "
              "float16 or bfloat16 on CUDA, or run float64 on the CPU");
  MAMBA_CHECK(chunk_size == kTile, op, "chunk_size must be ", kTile, " on CUDA (the kernels' tile length), got ",
              chunk_size);
}

// cu_seqlens reaches the internal ops with the seq_idx derived from it (check_scan_inputs checks cu_seqlens
// itself); the kernels index per-sequence states by those ids.
inline void check_packed_sequences(const char* op, const OptTensor& seq_idx, const OptTensor& cu_seqlens) {
  if (cu_seqlens) check_ids_with_cu_seqlens(op, seq_idx);
}

inline void check_launch(const char* op, cudaError_t err) {
  MAMBA_CHECK(err == cudaSuccess, op, "CUDA error: ", cudaGetErrorString(err));
}

// Multiprocessors of the current device, asked of the driver once per device instead of once per launch.
inline int sm_count() {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> cached[kMaxDevices] = {};
  const int device = c10::cuda::current_device();
  MAMBA_CHECK(device >= 0 && device < kMaxDevices, "selective_scan", "device index ", device, " out of range");
  int sms = cached[device].load(std::memory_order_relaxed);
  if (sms == 0) {
    check_launch("selective_scan", cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    cached[device].store(sms, std::memory_order_relaxed);
  }
  return sms;
}

// fp32 scratch arrays carved from one allocation (one caching-allocator call instead of one per array),
// each slice 256-byte aligned: sets *ptr for every {ptr, size}, nullptr for size 0. The tensor owns them.
inline at::Tensor float_workspace(const at::TensorOptions& f32,
                                  std::initializer_list<std::pair<float**, int64_t>> slices) {
  const auto padded = [](int64_t n) { return (n + 63) / 64 * 64; };
  int64_t total = 0;
  for (const auto& slice : slices) total += padded(slice.second);
  at::Tensor buffer = at::empty({total}, f32);
  float* next = buffer.data_ptr<float>();
  for (const auto& [ptr, n] : slices) {
    *ptr = n > 0 ? next : nullptr;
    next += padded(n);
  }
  return buffer;
}

// Launch layout on the current device (make_layout and set_local_parts in scan_layout.cuh explain the
// arguments).
inline ScanLayout device_layout(const SelectiveScanParams& p, int blocks_per_sm, double split_cost,
                                int64_t input_bytes) {
  const int sms = sm_count();
  ScanLayout l = make_layout(p, sms, blocks_per_sm, split_cost);
  set_local_parts(l, p, sms, int(input_bytes));
  return l;
}

// True when ptr is 16-byte aligned and so is every row start (each stride in bytes a multiple of 16):
// then the kernels load and store 8 time steps with 16-byte accesses.
inline bool rows_aligned16(const void* ptr, int64_t elsize, std::initializer_list<int64_t> strides) {
  if (reinterpret_cast<uintptr_t>(ptr) % 16 != 0) return false;
  for (int64_t s : strides) {
    if ((s * elsize) % 16 != 0) return false;
  }
  return true;
}

// The row-alignment condition for the (batch, dim, seqlen) tensors and B/C the forward touches.
inline bool forward_rows_aligned16(const SelectiveScanParams& p, int64_t elsize) {
  bool ok = rows_aligned16(p.u_ptr, elsize, {p.u_batch_stride, p.u_dim_stride}) &&
            rows_aligned16(p.delta_ptr, elsize, {p.delta_batch_stride, p.delta_dim_stride}) &&
            rows_aligned16(p.out_ptr, elsize, {p.out_batch_stride, p.out_dim_stride});
  if (p.z_ptr) ok = ok && rows_aligned16(p.z_ptr, elsize, {p.z_batch_stride, p.z_dim_stride});
  if (p.is_variable_B) ok = ok && rows_aligned16(p.B_ptr, elsize, {p.B_batch_stride, p.B_group_stride, p.B_dstate_stride});
  if (p.is_variable_C) ok = ok && rows_aligned16(p.C_ptr, elsize, {p.C_batch_stride, p.C_group_stride, p.C_dstate_stride});
  return ok;
}

// Calls fn with a null pointer of the kernels' element type for u's dtype (fp32, fp16 or bf16).
template <typename Fn>
void dispatch_input_type(const char* op, at::ScalarType t, Fn&& fn) {
  switch (t) {
    case at::kFloat: fn(static_cast<float*>(nullptr)); break;
    case at::kHalf: fn(static_cast<__half*>(nullptr)); break;
    case at::kBFloat16: fn(static_cast<__nv_bfloat16*>(nullptr)); break;
    default: MAMBA_CHECK(false, op, "unsupported dtype ", t, " on CUDA");
  }
}

}  // namespace mamba_ext::cuda
