// Fused element-wise and row-wise ops of the transformer block (fp32 residual stream,
// fp16 GEMM inputs). References: kernels/cpu/ops_ref.cc.
#include <cuda_fp16.h>

#include "cuda_common.cuh"
#include "kernels/cuda_ops.h"

namespace compressd::kernels::cuda {
namespace {

__global__ void RmsNormKernel(const float* __restrict__ x, const float* __restrict__ w,
                              const int32_t* __restrict__ rows, int64_t hidden, float eps,
                              half* __restrict__ out) {
  __shared__ float red[32];
  const int64_t r = blockIdx.x;
  const float* xr = x + (rows ? rows[r] : r) * hidden;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) ss = fmaf(xr[i], xr[i], ss);
  const float total = BlockSum(ss, red);
  const float inv = rsqrtf(total / static_cast<float>(hidden) + eps);
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) {
    out[r * hidden + i] = __float2half(xr[i] * inv * w[i]);
  }
}

// One thread per rotated pair (i, i + hd/2) of one head of one token.
__global__ void RopeKernel(float* __restrict__ q, float* __restrict__ k,
                           const int32_t* __restrict__ pos, int64_t n_tokens, int nq, int nkv,
                           int head_dim, const float* __restrict__ cos_t,
                           const float* __restrict__ sin_t) {
  const int half_dim = head_dim / 2;
  const int heads = nq + nkv;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n_tokens * heads * half_dim) return;
  const int i = static_cast<int>(idx % half_dim);
  const int h = static_cast<int>((idx / half_dim) % heads);
  const int64_t t = idx / (static_cast<int64_t>(half_dim) * heads);
  float* v = h < nq ? q + (t * nq + h) * head_dim : k + (t * nkv + (h - nq)) * head_dim;
  const int64_t p = pos[t];
  const float c = cos_t[p * half_dim + i], s = sin_t[p * half_dim + i];
  const float a = v[i], b = v[i + half_dim];
  v[i] = a * c - b * s;
  v[i + half_dim] = b * c + a * s;
}

__global__ void SwiGluKernel(const float* __restrict__ gate, const float* __restrict__ up,
                             int64_t ld, int64_t n_tokens, int64_t width, half* __restrict__ out) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n_tokens * width) return;
  const int64_t t = idx / width, i = idx % width;
  const float g = gate[t * ld + i];
  out[idx] = __float2half(g / (1.0f + __expf(-g)) * up[t * ld + i]);
}

__global__ void AddKernel(float* __restrict__ y, const float* __restrict__ x, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] += x[i];
}

__global__ void BiasKernel(float* __restrict__ y, int64_t ld, const float* __restrict__ bias,
                           int64_t n_tokens, int64_t width) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n_tokens * width) y[(i / width) * ld + i % width] += bias[i % width];
}

__global__ void GatherKernel(const half* __restrict__ embed, const int32_t* __restrict__ tokens,
                             int64_t hidden, float* __restrict__ x) {
  const int64_t t = blockIdx.x;
  const half* src = embed + static_cast<int64_t>(tokens[t]) * hidden;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) x[t * hidden + i] = __half2float(src[i]);
}

__global__ void ToHalfKernel(const float* __restrict__ x, int64_t n, half* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __float2half(x[i]);
}

constexpr int kThreads = 256;

}  // namespace

cudaError_t RmsNormToHalf(const float* x, const float* w, const int32_t* rows, int64_t n_rows,
                          int64_t hidden, float eps, void* out_f16, cudaStream_t stream) {
  if (n_rows <= 0) return cudaSuccess;
  RmsNormKernel<<<static_cast<unsigned>(n_rows), kThreads, 0, stream>>>(
      x, w, rows, hidden, eps, static_cast<half*>(out_f16));
  return cudaGetLastError();
}

cudaError_t RopeRotateHalf(float* q, float* k, const int32_t* pos, int64_t n_tokens,
                           int n_q_heads, int n_kv_heads, int head_dim, const float* cos,
                           const float* sin, cudaStream_t stream) {
  const int64_t total = n_tokens * (n_q_heads + n_kv_heads) * (head_dim / 2);
  if (total <= 0) return cudaSuccess;
  RopeKernel<<<CeilDiv(total, kThreads), kThreads, 0, stream>>>(q, k, pos, n_tokens, n_q_heads,
                                                                n_kv_heads, head_dim, cos, sin);
  return cudaGetLastError();
}

cudaError_t SwiGluToHalf(const float* gate, const float* up, int64_t ld, int64_t n_tokens,
                         int64_t width, void* out_f16, cudaStream_t stream) {
  const int64_t total = n_tokens * width;
  if (total <= 0) return cudaSuccess;
  SwiGluKernel<<<CeilDiv(total, kThreads), kThreads, 0, stream>>>(gate, up, ld, n_tokens, width,
                                                                  static_cast<half*>(out_f16));
  return cudaGetLastError();
}

cudaError_t ResidualAdd(float* y, const float* x, int64_t n, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  AddKernel<<<CeilDiv(n, kThreads), kThreads, 0, stream>>>(y, x, n);
  return cudaGetLastError();
}

cudaError_t AddBias(float* y, int64_t ld, const float* bias, int64_t n_tokens, int64_t width,
                    cudaStream_t stream) {
  if (n_tokens * width <= 0) return cudaSuccess;
  BiasKernel<<<CeilDiv(n_tokens * width, kThreads), kThreads, 0, stream>>>(y, ld, bias, n_tokens,
                                                                           width);
  return cudaGetLastError();
}

cudaError_t EmbeddingGather(const void* embed_f16, const int32_t* tokens, int64_t n_tokens,
                            int64_t hidden, float* x, cudaStream_t stream) {
  if (n_tokens <= 0) return cudaSuccess;
  GatherKernel<<<static_cast<unsigned>(n_tokens), kThreads, 0, stream>>>(
      static_cast<const half*>(embed_f16), tokens, hidden, x);
  return cudaGetLastError();
}

cudaError_t FloatToHalf(const float* x, int64_t n, void* out_f16, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  ToHalfKernel<<<CeilDiv(n, kThreads), kThreads, 0, stream>>>(x, n, static_cast<half*>(out_f16));
  return cudaGetLastError();
}

}  // namespace compressd::kernels::cuda
