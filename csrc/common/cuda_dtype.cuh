// Element conversions and vector loads/stores for the torch-free CUDA kernel headers of every op. Written
// with explicit intrinsics so they compile under plain nvcc flags (no implicit half/bf16 conversions needed).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace mamba_ext::cuda {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// kElts consecutive elements moved as whole 16-byte words (kElts * sizeof(T) must be a multiple of 16 and
// the address 16-byte aligned).
template <typename T, int kElts>
struct Packet {
  static_assert(kElts * sizeof(T) % 16 == 0, "a packet is whole 16-byte words");
  static constexpr int kWords = kElts * sizeof(T) / 16;
  union {
    uint4 words[kWords];
    T elts[kElts];
  };
  __device__ __forceinline__ void load(const T* src) {
#pragma unroll
    for (int i = 0; i < kWords; ++i) words[i] = reinterpret_cast<const uint4*>(src)[i];
  }
  __device__ __forceinline__ void store(T* dst) const {
#pragma unroll
    for (int i = 0; i < kWords; ++i) reinterpret_cast<uint4*>(dst)[i] = words[i];
  }
};

// Reads kElts elements starting at row[t] into fp32, zero past `len`; 16-byte loads when `vec` and the
// whole packet is in range.
template <typename T, int kElts>
__device__ __forceinline__ void load_floats(const T* row, int64_t t, int64_t len, bool vec, float (&out)[kElts]) {
  if (vec && t + kElts <= len) {
    Packet<T, kElts> pk;
    pk.load(row + t);
#pragma unroll
    for (int i = 0; i < kElts; ++i) out[i] = to_float(pk.elts[i]);
  } else {
#pragma unroll
    for (int i = 0; i < kElts; ++i) out[i] = t + i < len ? to_float(row[t + i]) : 0.f;
  }
}

// Writes kElts fp32 values to row[t..], skipping those at or past `len`.
template <typename T, int kElts>
__device__ __forceinline__ void store_floats(T* row, int64_t t, int64_t len, bool vec, const float (&v)[kElts]) {
  if (vec && t + kElts <= len) {
    Packet<T, kElts> pk;
#pragma unroll
    for (int i = 0; i < kElts; ++i) pk.elts[i] = from_float<T>(v[i]);
    pk.store(row + t);
  } else {
#pragma unroll
    for (int i = 0; i < kElts; ++i) {
      if (t + i < len) row[t + i] = from_float<T>(v[i]);
    }
  }
}

}  // namespace mamba_ext::cuda
