// Paged decode/prefill attention over fp16 KV blocks (engine/kv/dense_codec.cc layout),
// grouped-query (one CTA per KV head serves its whole query-head group, so K/V are read
// once), online softmax, split over context slices merged by a second kernel.
// Reference: kernels/cpu/attention_ref.cc (AttendDenseRef).
#include <cuda_fp16.h>

#include <cmath>

#include "cuda_common.cuh"
#include "kernels/cuda_ops.h"

namespace compressd::kernels::cuda {
namespace {

constexpr int kMaxGroup = 8;  // query heads per KV head
constexpr int kWarps = 4;

__device__ __forceinline__ const half* LayerBlock(const PagedKv& kv, int32_t block) {
  return reinterpret_cast<const half*>(static_cast<const uint8_t*>(kv.arena) +
                                       (static_cast<int64_t>(block) * kv.n_layers + kv.layer) *
                                           kv.layer_bytes);
}

template <int kHd>
__global__ void __launch_bounds__(kWarps * 32)
    AttendKernel(PagedKv kv, int n_heads, float scale, int split_tokens,
                 const float* __restrict__ q, const int32_t* __restrict__ block_tables,
                 const int32_t* __restrict__ table_offset, const int32_t* __restrict__ n_ctx,
                 float* __restrict__ ws_acc, float* __restrict__ ws_ml) {
  constexpr int kDpl = kHd / 32;  // dims per lane in the V phase
  __shared__ float q_s[kMaxGroup][kHd];
  __shared__ float red_m[kWarps][kMaxGroup], red_l[kWarps][kMaxGroup];
  __shared__ float red_acc[kWarps][kMaxGroup][kHd];

  const int kvh = blockIdx.x;
  const int64_t t = blockIdx.y;
  const int split = blockIdx.z, n_splits = gridDim.z;
  const int group = n_heads / kv.n_kv_heads;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int ctx = n_ctx[t];
  const int begin = split * split_tokens;
  const int end = min(ctx, begin + split_tokens);
  const int64_t half_elems = static_cast<int64_t>(kv.n_kv_heads) * kv.block_size * kHd;
  const int32_t* table = block_tables + table_offset[t];

  for (int i = threadIdx.x; i < group * kHd; i += blockDim.x) {
    q_s[i / kHd][i % kHd] = q[(t * n_heads + kvh * group) * kHd + i];
  }
  __syncthreads();

  float m[kMaxGroup], l[kMaxGroup], acc[kMaxGroup][kDpl];
#pragma unroll
  for (int h = 0; h < kMaxGroup; ++h) {
    m[h] = -INFINITY;
    l[h] = 0.0f;
#pragma unroll
    for (int i = 0; i < kDpl; ++i) acc[h][i] = 0.0f;
  }

  for (int base = begin + warp * 32; base < end; base += kWarps * 32) {
    // Scores: lane j owns token base + j.
    const int tok = base + lane;
    const bool valid = tok < end;
    float s[kMaxGroup];
#pragma unroll
    for (int h = 0; h < kMaxGroup; ++h) s[h] = 0.0f;
    if (valid) {
      const half* krow = LayerBlock(kv, table[tok / kv.block_size]) +
                         (static_cast<int64_t>(kvh) * kv.block_size + tok % kv.block_size) * kHd;
#pragma unroll 4
      for (int d = 0; d < kHd; d += 8) {
        const uint4 raw = *reinterpret_cast<const uint4*>(krow + d);
        const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
        float kf[8];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float2 f = __half22float2(AsHalf2(w[i]));
          kf[2 * i] = f.x;
          kf[2 * i + 1] = f.y;
        }
#pragma unroll
        for (int h = 0; h < kMaxGroup; ++h) {
          if (h < group) {
#pragma unroll
            for (int i = 0; i < 8; ++i) s[h] = fmaf(q_s[h][d + i], kf[i], s[h]);
          }
        }
      }
    }
    float p[kMaxGroup];
#pragma unroll
    for (int h = 0; h < kMaxGroup; ++h) {
      if (h >= group) continue;
      const float sc = valid ? s[h] * scale : -INFINITY;
      const float m_new = fmaxf(m[h], WarpMax(sc));
      const float corr = __expf(m[h] - m_new);  // m[h] = -inf -> 0
      p[h] = valid ? __expf(sc - m_new) : 0.0f;
      l[h] = l[h] * corr + WarpSum(p[h]);
#pragma unroll
      for (int i = 0; i < kDpl; ++i) acc[h][i] *= corr;
      m[h] = m_new;
    }
    // Values: lane owns dims [lane * kDpl, +kDpl) of every token of the chunk.
    const int n_valid = min(32, end - base);
    for (int j = 0; j < n_valid; ++j) {
      const int tj = base + j;
      const half* vrow = LayerBlock(kv, table[tj / kv.block_size]) + half_elems +
                         (static_cast<int64_t>(kvh) * kv.block_size + tj % kv.block_size) * kHd +
                         lane * kDpl;
      float vf[kDpl];
      if constexpr (kDpl == 1) {
        vf[0] = __half2float(*vrow);
      } else {
#pragma unroll
        for (int i = 0; i < kDpl; i += 2) {
          const float2 f = __half22float2(*reinterpret_cast<const half2*>(vrow + i));
          vf[i] = f.x;
          vf[i + 1] = f.y;
        }
      }
#pragma unroll
      for (int h = 0; h < kMaxGroup; ++h) {
        if (h >= group) continue;
        const float pj = __shfl_sync(0xffffffffu, p[h], j);
#pragma unroll
        for (int i = 0; i < kDpl; ++i) acc[h][i] = fmaf(pj, vf[i], acc[h][i]);
      }
    }
  }

  // Merge the warps' states, then write this split's partial (unnormalised) result.
#pragma unroll
  for (int h = 0; h < kMaxGroup; ++h) {
    if (h >= group) continue;
    if (lane == 0) {
      red_m[warp][h] = m[h];
      red_l[warp][h] = l[h];
    }
#pragma unroll
    for (int i = 0; i < kDpl; ++i) red_acc[warp][h][lane * kDpl + i] = acc[h][i];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < group * kHd; i += blockDim.x) {
    const int h = i / kHd, d = i % kHd;
    float mx = -INFINITY;
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, red_m[w][h]);
    float a = 0.0f, lsum = 0.0f;
    if (mx != -INFINITY) {
      for (int w = 0; w < kWarps; ++w) {
        const float f = __expf(red_m[w][h] - mx);
        a += red_acc[w][h][d] * f;
        lsum += red_l[w][h] * f;
      }
    }
    const int64_t slot = (t * n_heads + kvh * group + h) * n_splits + split;
    ws_acc[slot * kHd + d] = a;
    if (d == 0) {
      ws_ml[2 * slot] = mx;
      ws_ml[2 * slot + 1] = lsum;
    }
  }
}

// One block per (token, head), one thread per dim.
__global__ void CombineKernel(int head_dim, int n_splits, const float* __restrict__ ws_acc,
                              const float* __restrict__ ws_ml, half* __restrict__ out) {
  const int64_t th = blockIdx.x;  // t * n_heads + h
  float mx = -INFINITY;
  for (int s = 0; s < n_splits; ++s) mx = fmaxf(mx, ws_ml[2 * (th * n_splits + s)]);
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float a = 0.0f, lsum = 0.0f;
    if (mx != -INFINITY) {
      for (int s = 0; s < n_splits; ++s) {
        const int64_t slot = th * n_splits + s;
        const float f = __expf(ws_ml[2 * slot] - mx);
        a += ws_acc[slot * head_dim + d] * f;
        lsum += ws_ml[2 * slot + 1] * f;
      }
    }
    out[th * head_dim + d] = __float2half(lsum > 0.0f ? a / lsum : 0.0f);
  }
}

__global__ void StoreKvKernel(PagedKv kv, const float* __restrict__ k, const float* __restrict__ v,
                              const int32_t* __restrict__ slot_mapping, int64_t n_tokens) {
  const int64_t kvd = static_cast<int64_t>(kv.n_kv_heads) * kv.head_dim;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n_tokens * kvd) return;
  const int64_t t = idx / kvd;
  const int32_t sm = slot_mapping[t];
  if (sm < 0) return;  // padded row of a captured batch
  const int h = static_cast<int>((idx % kvd) / kv.head_dim), d = static_cast<int>(idx % kv.head_dim);
  half* base = const_cast<half*>(LayerBlock(kv, sm / kv.block_size));
  const int64_t off = (static_cast<int64_t>(h) * kv.block_size + sm % kv.block_size) * kv.head_dim + d;
  base[off] = __float2half(k[idx]);
  base[kv.n_kv_heads * static_cast<int64_t>(kv.block_size) * kv.head_dim + off] = __float2half(v[idx]);
}

}  // namespace

size_t AttentionWorkspaceBytes(int64_t n_tokens, int n_heads, int head_dim, int n_splits) {
  return static_cast<size_t>(n_tokens) * n_heads * n_splits * (head_dim + 2) * sizeof(float);
}

bool AttentionSupported(int head_dim, int n_heads, int n_kv_heads) {
  if (n_kv_heads <= 0 || n_heads % n_kv_heads != 0 || n_heads / n_kv_heads > kMaxGroup) {
    return false;
  }
  return head_dim == 32 || head_dim == 64 || head_dim == 128 || head_dim == 256;
}

cudaError_t StoreKv(const PagedKv& kv, const float* k, const float* v,
                    const int32_t* slot_mapping, int64_t n_tokens, cudaStream_t stream) {
  const int64_t total = n_tokens * kv.n_kv_heads * kv.head_dim;
  if (total <= 0) return cudaSuccess;
  StoreKvKernel<<<CeilDiv(total, 256), 256, 0, stream>>>(kv, k, v, slot_mapping, n_tokens);
  return cudaGetLastError();
}

cudaError_t PagedAttention(const PagedKv& kv, const AttentionParams& p, const float* q,
                           const int32_t* block_tables, const int32_t* table_offset,
                           const int32_t* n_ctx, int64_t n_tokens, void* workspace,
                           void* out_f16, cudaStream_t stream) {
  if (n_tokens <= 0) return cudaSuccess;
  if (!AttentionSupported(kv.head_dim, p.n_heads, kv.n_kv_heads) || p.n_splits <= 0 ||
      p.split_tokens <= 0 || n_tokens > 65535 || p.n_splits > 65535) {
    return cudaErrorInvalidValue;
  }
  float* ws_acc = static_cast<float*>(workspace);
  float* ws_ml = ws_acc + static_cast<size_t>(n_tokens) * p.n_heads * p.n_splits * kv.head_dim;
  const dim3 grid(kv.n_kv_heads, static_cast<unsigned>(n_tokens), p.n_splits);
  switch (kv.head_dim) {
    case 32:
      AttendKernel<32><<<grid, kWarps * 32, 0, stream>>>(kv, p.n_heads, p.scale, p.split_tokens, q,
                                                         block_tables, table_offset, n_ctx,
                                                         ws_acc, ws_ml);
      break;
    case 64:
      AttendKernel<64><<<grid, kWarps * 32, 0, stream>>>(kv, p.n_heads, p.scale, p.split_tokens, q,
                                                         block_tables, table_offset, n_ctx,
                                                         ws_acc, ws_ml);
      break;
    case 128:
      AttendKernel<128><<<grid, kWarps * 32, 0, stream>>>(kv, p.n_heads, p.scale, p.split_tokens,
                                                          q, block_tables, table_offset, n_ctx,
                                                          ws_acc, ws_ml);
      break;
    default:
      AttendKernel<256><<<grid, kWarps * 32, 0, stream>>>(kv, p.n_heads, p.scale, p.split_tokens,
                                                          q, block_tables, table_offset, n_ctx,
                                                          ws_acc, ws_ml);
      break;
  }
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  CombineKernel<<<static_cast<unsigned>(n_tokens * p.n_heads), kv.head_dim, 0, stream>>>(
      kv.head_dim, p.n_splits, ws_acc, ws_ml, static_cast<half*>(out_f16));
  return cudaGetLastError();
}

}  // namespace compressd::kernels::cuda
