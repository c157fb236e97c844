// Token sampling on the GPU, one CTA per row: greedy argmax, or temperature + top-k +
// top-p with thresholds found by bisection over the float order (exact after 32 steps,
// no sort), then one Philox4x32-10 draw and a block prefix scan in index order.
#include <cub/block/block_scan.cuh>

#include <cmath>

#include "cuda_common.cuh"
#include "kernels/cuda_ops.h"

namespace compressd::kernels::cuda {
namespace {

constexpr int kThreads = 1024;

__host__ __device__ inline float PhiloxUniformImpl(uint64_t seed, uint64_t offset) {
  uint32_t c0 = static_cast<uint32_t>(offset), c1 = static_cast<uint32_t>(offset >> 32);
  uint32_t c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int r = 0; r < 10; ++r) {
    const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
    const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(p1);
    c3 = static_cast<uint32_t>(p0);
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return static_cast<float>(c0 >> 8) * (1.0f / 16777216.0f);
}

// Monotone map float -> uint32 (larger float, larger key).
__device__ __forceinline__ uint32_t Key(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

struct ArgMax {
  float v;
  int64_t i;
};

__device__ ArgMax BlockArgMax(ArgMax a, float* sv, int64_t* si) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, a.v, o);
    const int64_t oi = __shfl_xor_sync(0xffffffffu, a.i, o);
    if (ov > a.v || (ov == a.v && oi < a.i)) a = {ov, oi};
  }
  __syncthreads();
  if (lane == 0) {
    sv[warp] = a.v;
    si[warp] = a.i;
  }
  __syncthreads();
  a = {sv[0], si[0]};
  for (int w = 1; w < static_cast<int>(blockDim.x >> 5); ++w) {
    if (sv[w] > a.v || (sv[w] == a.v && si[w] < a.i)) a = {sv[w], si[w]};
  }
  return a;
}

__global__ void __launch_bounds__(kThreads)
    SampleKernel(const float* __restrict__ logits, int64_t vocab,
                 const SamplingRow* __restrict__ rows, int32_t* __restrict__ tokens) {
  using Scan = cub::BlockScan<float, kThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ float red[32];
  __shared__ float sv[32];
  __shared__ int64_t si[32];
  __shared__ int64_t chosen;

  const int64_t r = blockIdx.x;
  const float* l = logits + r * vocab;
  const SamplingRow row = rows[r];
  const int tid = threadIdx.x;

  ArgMax best{-INFINITY, vocab};
  for (int64_t i = tid; i < vocab; i += kThreads) {
    if (l[i] > best.v || (l[i] == best.v && i < best.i)) best = {l[i], i};
  }
  best = BlockArgMax(best, sv, si);
  if (row.temperature <= 0.0f || row.top_k == 1 || best.v == -INFINITY) {
    if (tid == 0) tokens[r] = static_cast<int32_t>(best.i < vocab ? best.i : 0);
    return;
  }
  const float inv_t = 1.0f / row.temperature;
  const float zmax = best.v * inv_t;
  auto weight = [&](int64_t i) { return __expf(l[i] * inv_t - zmax); };

  // Top-k threshold: the largest key with at least k tokens at or above it.
  uint32_t lo = 0, hi = Key(best.v);
  if (row.top_k > 0 && row.top_k < vocab) {
    while (lo < hi) {
      const uint32_t mid = lo + (hi - lo + 1) / 2;
      float cnt = 0.0f;
      for (int64_t i = tid; i < vocab; i += kThreads) cnt += Key(l[i]) >= mid ? 1.0f : 0.0f;
      if (BlockSum(cnt, red) >= static_cast<float>(row.top_k)) lo = mid; else hi = mid - 1;
    }
  }
  const uint32_t theta_k = lo;
  float z_k = 0.0f;
  for (int64_t i = tid; i < vocab; i += kThreads) z_k += Key(l[i]) >= theta_k ? weight(i) : 0.0f;
  z_k = BlockSum(z_k, red);
  // Top-p threshold: the largest key >= theta_k keeping at least top_p of that mass.
  uint32_t theta = theta_k;
  if (row.top_p < 1.0f) {
    lo = theta_k;
    hi = Key(best.v);
    const float need = row.top_p * z_k;
    while (lo < hi) {
      const uint32_t mid = lo + (hi - lo + 1) / 2;
      float mass = 0.0f;
      for (int64_t i = tid; i < vocab; i += kThreads) mass += Key(l[i]) >= mid ? weight(i) : 0.0f;
      if (BlockSum(mass, red) >= need) lo = mid; else hi = mid - 1;
    }
    theta = lo;
  }

  // Draw in index order: thread tid owns the contiguous segment [tid*seg, (tid+1)*seg).
  const int64_t seg = (vocab + kThreads - 1) / kThreads;
  const int64_t b = tid * seg, e = min(vocab, b + seg);
  float local = 0.0f;
  for (int64_t i = b; i < e; ++i) local += Key(l[i]) >= theta ? weight(i) : 0.0f;
  float excl = 0.0f, total = 0.0f;
  Scan(scan_tmp).ExclusiveSum(local, excl, total);
  if (tid == 0) chosen = -1;
  __syncthreads();
  const float u = PhiloxUniformImpl(row.seed, row.offset) * total;
  if (u >= excl && u < excl + local) {
    float c = excl;
    for (int64_t i = b; i < e; ++i) {
      if (Key(l[i]) < theta) continue;
      c += weight(i);
      if (u < c) {
        chosen = i;
        break;
      }
    }
  }
  __syncthreads();
  if (tid == 0) tokens[r] = static_cast<int32_t>(chosen >= 0 ? chosen : best.i);
}

}  // namespace

float PhiloxUniform(uint64_t seed, uint64_t offset) { return PhiloxUniformImpl(seed, offset); }

cudaError_t Sample(const float* logits, int64_t n_rows, int64_t vocab, const SamplingRow* rows,
                   int32_t* tokens, cudaStream_t stream) {
  if (n_rows <= 0) return cudaSuccess;
  if (vocab <= 0 || n_rows > 0x7fffffff) return cudaErrorInvalidValue;
  SampleKernel<<<static_cast<unsigned>(n_rows), kThreads, 0, stream>>>(logits, vocab, rows, tokens);
  return cudaGetLastError();
}

}  // namespace compressd::kernels::cuda
