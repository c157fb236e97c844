// W4A16 / W8A16 group-wise integer GEMM: a GEMV for batch 1..8 (128-bit weight loads, one
// warp per output row, dequant in registers, warp reduction) and an mma.sync m16n8k16
// tensor-core kernel for batch 9..64 (cp.async double buffering, dequant from shared
// memory into B fragments in registers). Layout: kernels/cuda_formats.h.
#include <cuda_fp16.h>

#include <algorithm>

#include "cuda_common.cuh"
#include "kernels/cuda_ops.h"

namespace compressd::kernels::cuda {
namespace {

constexpr int kGemvWarps = 4;

template <int kBits, int kBatch>
__global__ void __launch_bounds__(kGemvWarps * 32)
    GemvKernel(const uint4* __restrict__ codes, const half2* __restrict__ so,
               const half* __restrict__ x, float* __restrict__ y, int64_t rows, int64_t cols,
               int group, int64_t ldy, bool accumulate) {
  constexpr int kChunkCols = 128 / kBits;   // 32 (int4) or 16 (int8)
  constexpr int kPairs = kChunkCols / 2;
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kGemvWarps + (threadIdx.x >> 5);
  if (row >= rows) return;
  const int64_t chunks = cols / kChunkCols;
  const uint4* wrow = codes + row * chunks;
  const half2* sorow = so + row * (cols / group);
  float acc[kBatch];
#pragma unroll
  for (int b = 0; b < kBatch; ++b) acc[b] = 0.0f;

#pragma unroll 2
  for (int64_t ch = lane; ch < chunks; ch += 32) {
    const uint4 q = __ldg(wrow + ch);
    const half2 sov = __ldg(sorow + ch * kChunkCols / group);
    const uint32_t words[4] = {q.x, q.y, q.z, q.w};
    half2 wv[kPairs];  // natural column-pair order
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      if constexpr (kBits == 4) {
        half2 p[4];
        DequantInt4Word(words[t], sov, p);
#pragma unroll
        for (int j = 0; j < 4; ++j) wv[4 * j + t] = p[j];
      } else {
        half2 p[2];
        DequantInt8Word(words[t], sov, p);
        wv[t] = p[0];
        wv[4 + t] = p[1];
      }
    }
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const uint4* xp = reinterpret_cast<const uint4*>(x + b * cols + ch * kChunkCols);
      float s = 0.0f;
#pragma unroll
      for (int v = 0; v < kPairs / 4; ++v) {
        const uint4 xv = __ldg(xp + v);
        const uint32_t xw[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float2 a = __half22float2(AsHalf2(xw[i]));
          const float2 w = __half22float2(wv[4 * v + i]);
          s = fmaf(a.x, w.x, fmaf(a.y, w.y, s));
        }
      }
      acc[b] += s;
    }
  }
#pragma unroll
  for (int b = 0; b < kBatch; ++b) {
    const float v = WarpSum(acc[b]);
    if (lane == 0) {
      float* out = y + b * ldy + row;
      *out = accumulate ? *out + v : v;
    }
  }
}

template <int kBits>
cudaError_t LaunchGemv(const QuantWeightView& w, const half* x, int64_t n, float* y,
                       int64_t ldy, bool accumulate, cudaStream_t stream) {
  const dim3 grid(CeilDiv(w.rows, kGemvWarps));
  const dim3 block(kGemvWarps * 32);
  const auto* codes = static_cast<const uint4*>(w.codes);
  const auto* so = static_cast<const half2*>(w.scale_offset);
  for (int64_t b0 = 0; b0 < n; b0 += 8) {
    const int nb = static_cast<int>(std::min<int64_t>(8, n - b0));
    const half* xb = x + b0 * w.cols;
    float* yb = y + b0 * ldy;
#define COMPRESSD_GEMV_CASE(NB)                                                               \
  case NB:                                                                                    \
    GemvKernel<kBits, NB><<<grid, block, 0, stream>>>(codes, so, xb, yb, w.rows, w.cols,     \
                                                       w.group_size, ldy, accumulate);        \
    break;
    switch (nb) {
      COMPRESSD_GEMV_CASE(1)
      COMPRESSD_GEMV_CASE(2)
      COMPRESSD_GEMV_CASE(3)
      COMPRESSD_GEMV_CASE(4)
      COMPRESSD_GEMV_CASE(5)
      COMPRESSD_GEMV_CASE(6)
      COMPRESSD_GEMV_CASE(7)
      COMPRESSD_GEMV_CASE(8)
    }
#undef COMPRESSD_GEMV_CASE
  }
  return cudaGetLastError();
}

// ---- Tensor-core path ---------------------------------------------------------------------
constexpr int kMmaBlockN = 64;   // output rows per block: 4 warps x 16
constexpr int kMmaKTile = 64;    // input columns per pipeline stage
constexpr int kAStride = kMmaKTile + 8;  // halves; +16 B per row avoids bank conflicts

__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int src_bytes = valid ? 16 : 0;  // 0 -> zero-fill
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem),
               "r"(src_bytes));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kN>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kN));
}

__device__ __forceinline__ void Mma16816(float c[4], const uint32_t a[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Block: 4 warps, 64 output rows (warp w: rows 16w..16w+15 as two n8 tiles), all n <= 64
// tokens (kMTiles m16 tiles). blockIdx.y: a slice of the K tiles (split-K, atomics).
template <int kBits, int kMTiles>
__global__ void __launch_bounds__(128)
    MmaKernel(const uint8_t* __restrict__ codes, const half2* __restrict__ so,
              const half* __restrict__ x, float* __restrict__ y, int64_t n, int64_t rows,
              int64_t cols, int group, int64_t ldy, bool accumulate, int tiles_per_split) {
  constexpr int kRowBytes = kMmaKTile * kBits / 8;  // weight bytes per row per tile
  constexpr int kM = kMTiles * 16;
  __shared__ __align__(16) uint8_t ws[2][kMmaBlockN * kRowBytes];
  __shared__ __align__(16) half as[2][kM * kAStride];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kMmaBlockN;
  const int64_t row_bytes = cols * kBits / 8;
  const int k_tiles = static_cast<int>(cols / kMmaKTile);
  const int kt_begin = blockIdx.y * tiles_per_split;
  const int kt_end = min(k_tiles, kt_begin + tiles_per_split);
  if (kt_begin >= kt_end) return;

  auto load_tile = [&](int kt, int buf) {
    constexpr int kWCopies = kMmaBlockN * kRowBytes / 16;
    for (int i = tid; i < kWCopies; i += 128) {
      const int r = i / (kRowBytes / 16), c = i % (kRowBytes / 16);
      CpAsync16(&ws[buf][r * kRowBytes + c * 16],
                codes + (n0 + r) * row_bytes + static_cast<int64_t>(kt) * kRowBytes + c * 16,
                true);
    }
    constexpr int kACopies = kM * kMmaKTile / 8;
    for (int i = tid; i < kACopies; i += 128) {
      const int m = i / (kMmaKTile / 8), c = i % (kMmaKTile / 8);
      const bool valid = m < n;
      const half* src = x + (valid ? m * cols + static_cast<int64_t>(kt) * kMmaKTile + c * 8 : 0);
      CpAsync16(&as[buf][m * kAStride + c * 8], src, valid);
    }
    CpAsyncCommit();
  };

  float acc[kMTiles][2][4];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.0f;

  load_tile(kt_begin, 0);
  for (int kt = kt_begin; kt < kt_end; ++kt) {
    const int buf = (kt - kt_begin) & 1;
    if (kt + 1 < kt_end) {
      load_tile(kt + 1, buf ^ 1);
      CpAsyncWait<1>();
    } else {
      CpAsyncWait<0>();
    }
    __syncthreads();
    const int64_t k0 = static_cast<int64_t>(kt) * kMmaKTile;
    constexpr int kChunksPerTile = kMmaKTile * kBits / 128;
#pragma unroll
    for (int c = 0; c < kChunksPerTile; ++c) {
      // B fragments of both n8 tiles for this chunk's k16 steps.
      constexpr int kSteps = kBits == 4 ? 2 : 1;
      uint32_t b[2][kSteps][2];
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        const int r = warp * 16 + nt * 8 + g;
        const uint32_t word =
            *reinterpret_cast<const uint32_t*>(&ws[buf][r * kRowBytes + c * 16 + 4 * t]);
        const int64_t kc = k0 + c * (128 / kBits);
        const half2 sov = __ldg(so + (n0 + r) * (cols / group) + kc / group);
        if constexpr (kBits == 4) {
          half2 p[4];
          DequantInt4Word(word, sov, p);
          b[nt][0][0] = AsU32(p[0]);
          b[nt][0][1] = AsU32(p[1]);
          b[nt][kSteps - 1][0] = AsU32(p[2]);
          b[nt][kSteps - 1][1] = AsU32(p[3]);
        } else {
          half2 p[2];
          DequantInt8Word(word, sov, p);
          b[nt][0][0] = AsU32(p[0]);
          b[nt][0][1] = AsU32(p[1]);
        }
      }
#pragma unroll
      for (int s = 0; s < kSteps; ++s) {
        const int kcol = c * (128 / kBits) + s * 16;
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          const half* a0 = &as[buf][(mt * 16 + g) * kAStride + kcol + 2 * t];
          const half* a1 = a0 + 8 * kAStride;
          const uint32_t a[4] = {*reinterpret_cast<const uint32_t*>(a0),
                                 *reinterpret_cast<const uint32_t*>(a1),
                                 *reinterpret_cast<const uint32_t*>(a0 + 8),
                                 *reinterpret_cast<const uint32_t*>(a1 + 8)};
#pragma unroll
          for (int nt = 0; nt < 2; ++nt) Mma16816(acc[mt][nt], a, b[nt][s][0], b[nt][s][1]);
        }
      }
    }
    __syncthreads();
  }

  const bool atomic = gridDim.y > 1;
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int64_t m = mt * 16 + g + (i >= 2 ? 8 : 0);
        const int64_t col = n0 + warp * 16 + nt * 8 + 2 * t + (i & 1);
        if (m >= n) continue;
        float* out = y + m * ldy + col;
        if (atomic) {
          atomicAdd(out, acc[mt][nt][i]);
        } else {
          *out = accumulate ? *out + acc[mt][nt][i] : acc[mt][nt][i];
        }
      }
    }
  }
}

int SmCount() {
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 108;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
    return 108;
  }
  return sms;
}

template <int kBits>
cudaError_t LaunchMma(const QuantWeightView& w, const half* x, int64_t n, float* y, int64_t ldy,
                      bool accumulate, cudaStream_t stream) {
  const int64_t n_blocks = w.rows / kMmaBlockN;
  const int k_tiles = static_cast<int>(w.cols / kMmaKTile);
  // Split K until the grid covers the GPU about twice (weights are read once either way).
  int splits = static_cast<int>(std::max<int64_t>(1, 2 * SmCount() / std::max<int64_t>(1, n_blocks)));
  splits = std::min(splits, std::max(1, k_tiles / 4));
  const int per_split = (k_tiles + splits - 1) / splits;
  splits = (k_tiles + per_split - 1) / per_split;
  if (splits > 1 && !accumulate) {
    cudaError_t e = cudaMemset2DAsync(y, ldy * sizeof(float), 0, w.rows * sizeof(float), n, stream);
    if (e != cudaSuccess) return e;
  }
  const dim3 grid(static_cast<unsigned>(n_blocks), static_cast<unsigned>(splits));
  const auto* codes = static_cast<const uint8_t*>(w.codes);
  const auto* so = static_cast<const half2*>(w.scale_offset);
  for (int64_t m0 = 0; m0 < n; m0 += 64) {
    const int64_t nm = std::min<int64_t>(64, n - m0);
    const half* xm = x + m0 * w.cols;
    float* ym = y + m0 * ldy;
    const int m_tiles = static_cast<int>((nm + 15) / 16);
#define COMPRESSD_MMA_CASE(MT)                                                            \
  case MT:                                                                                \
    MmaKernel<kBits, MT><<<grid, 128, 0, stream>>>(codes, so, xm, ym, nm, w.rows, w.cols, \
                                                   w.group_size, ldy, accumulate,         \
                                                   per_split);                            \
    break;
    switch (m_tiles) {
      COMPRESSD_MMA_CASE(1)
      COMPRESSD_MMA_CASE(2)
      COMPRESSD_MMA_CASE(3)
      COMPRESSD_MMA_CASE(4)
    }
#undef COMPRESSD_MMA_CASE
  }
  return cudaGetLastError();
}

bool MmaShapeOk(const QuantWeightView& w) {
  return w.rows % kMmaBlockN == 0 && w.cols % kMmaKTile == 0;
}

}  // namespace

bool QuantGemmSupported(int arch, int bits, int group_size, int64_t rows, int64_t cols) {
  if (arch < 80) return false;  // cp.async and bf16-era mma shapes
  if (bits != 4 && bits != 8) return false;
  if (group_size <= 0 || group_size % 32 != 0 || cols % group_size != 0) return false;
  return rows > 0 && cols > 0;
}

cudaError_t QuantGemv(const QuantWeightView& w, const void* x_f16, int64_t n, float* y,
                      int64_t ldy, bool accumulate, cudaStream_t stream) {
  const half* x = static_cast<const half*>(x_f16);
  return w.bits == 4 ? LaunchGemv<4>(w, x, n, y, ldy, accumulate, stream)
                     : LaunchGemv<8>(w, x, n, y, ldy, accumulate, stream);
}

cudaError_t QuantGemmMma(const QuantWeightView& w, const void* x_f16, int64_t n, float* y,
                         int64_t ldy, bool accumulate, cudaStream_t stream) {
  if (!MmaShapeOk(w)) return cudaErrorInvalidValue;
  const half* x = static_cast<const half*>(x_f16);
  return w.bits == 4 ? LaunchMma<4>(w, x, n, y, ldy, accumulate, stream)
                     : LaunchMma<8>(w, x, n, y, ldy, accumulate, stream);
}

cudaError_t QuantGemm(const QuantWeightView& w, const void* x_f16, int64_t n, float* y,
                      int64_t ldy, bool accumulate, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  if (n <= 8 || !MmaShapeOk(w)) return QuantGemv(w, x_f16, n, y, ldy, accumulate, stream);
  return QuantGemmMma(w, x_f16, n, y, ldy, accumulate, stream);
}

}  // namespace compressd::kernels::cuda
