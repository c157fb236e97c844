// Device helpers shared by the CUDA kernels (private to kernels/cuda).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace compressd::kernels::cuda {

__device__ __forceinline__ half2 AsHalf2(uint32_t u) {
  half2 h;
  static_assert(sizeof(h) == sizeof(u), "half2 is 32 bits");
  memcpy(&h, &u, 4);
  return h;
}
__device__ __forceinline__ uint32_t AsU32(half2 h) {
  uint32_t u;
  memcpy(&u, &h, 4);
  return u;
}

// int4 word -> 4 half2 pairs (layout: kernels/cuda_formats.h), w = code * s + o.
// OR-ing a nibble into 0x6400 (1024.0h) yields the exact half 1024 + code.
__device__ __forceinline__ void DequantInt4Word(uint32_t w, half2 so, half2 out[4]) {
  const half2 k1024 = AsHalf2(0x64006400u);
  const half2 s = __half2half2(__low2half(so));
  const half2 o = __half2half2(__high2half(so));
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const half2 v = AsHalf2(((w >> (4 * j)) & 0x000F000Fu) | 0x64006400u);
    out[j] = __hfma2(__hsub2(v, k1024), s, o);
  }
}

// int8 word -> 2 half2 pairs: bytes (0,1) and (2,3).
__device__ __forceinline__ void DequantInt8Word(uint32_t w, half2 so, half2 out[2]) {
  const half2 k1024 = AsHalf2(0x64006400u);
  const half2 s = __half2half2(__low2half(so));
  const half2 o = __half2half2(__high2half(so));
  out[0] = __hfma2(__hsub2(AsHalf2(__byte_perm(w, 0x64646464u, 0x5140)), k1024), s, o);
  out[1] = __hfma2(__hsub2(AsHalf2(__byte_perm(w, 0x64646464u, 0x7362)), k1024), s, o);
}

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the result.
__device__ __forceinline__ float BlockSum(float v, float* smem32) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = WarpSum(v);
  __syncthreads();
  if (lane == 0) smem32[warp] = v;
  __syncthreads();
  const int nw = blockDim.x >> 5;
  float t = lane < nw ? smem32[lane] : 0.0f;
  return WarpSum(t);
}

inline unsigned CeilDiv(int64_t a, int64_t b) { return static_cast<unsigned>((a + b - 1) / b); }

}  // namespace compressd::kernels::cuda
