// Parity of AttendDense's AVX2 and AVX-512 paths with AttendDenseRef: F32/F16/BF16 KV, GQA
// group sizes that do and do not divide the kernels' head chunks, head_dim 8..256 including
// non-multiples of the vector width, contexts that end mid-block, ragged block sizes, head
// sub-ranges (how callers split heads across threads) and peaked softmaxes that make the
// online rescaling matter.
#include "kernels/attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/types.h"

namespace compressd::kernels {

namespace {

using AttendFn = decltype(&AttendDenseRef);

struct Path {
  const char* name;
  AttendFn fn;
  bool available;
};

std::vector<Path> Paths() {
  const CpuFeatures& f = GetCpuFeatures();
  const bool avx2 = f.avx2 && f.fma && f.f16c;
  const bool avx512 = avx2 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq;
  return {{"avx2", &AttendDenseAvx2, avx2},
          {"avx512", &AttendDenseAvx512, avx512},
          {"dispatch", &AttendDense, true}};
}

// A paged cache filled through StoreDenseKv, so its bytes are exactly what the engine writes.
struct Cache {
  DenseKvLayout layout;
  std::vector<std::vector<uint8_t>> k, v;
  std::vector<const void*> k_ptrs, v_ptrs;

  Cache(DType dt, int block_size, int n_kv_heads, int head_dim, int n_ctx, std::mt19937& rng) {
    layout = {dt, block_size, n_kv_heads, head_dim};
    const int n_blocks = (n_ctx + block_size - 1) / block_size;
    const size_t bytes = static_cast<size_t>(block_size) * n_kv_heads * head_dim * DTypeSize(dt);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<float> kt(static_cast<size_t>(n_kv_heads) * head_dim), vt = kt;
    for (int b = 0; b < n_blocks; ++b) {
      k.emplace_back(bytes, 0xff);  // 0xff..: NaN in every dtype, so stray reads show up
      v.emplace_back(bytes, 0xff);
    }
    for (int t = 0; t < n_ctx; ++t) {
      for (float& x : kt) x = u(rng);
      for (float& x : vt) x = u(rng);
      StoreDenseKv(layout, k[t / block_size].data(), v[t / block_size].data(), t % block_size,
                   kt.data(), vt.data());
    }
    for (int b = 0; b < n_blocks; ++b) {
      k_ptrs.push_back(k[b].data());
      v_ptrs.push_back(v[b].data());
    }
  }
};

void Check(const Path& path, DType dt, int block_size, int n_heads, int n_kv_heads, int head_dim,
           int n_ctx, float scale_mult, int head_begin, int head_end, std::mt19937& rng) {
  Cache cache(dt, block_size, n_kv_heads, head_dim, n_ctx, rng);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> q(static_cast<size_t>(n_heads) * head_dim);
  for (float& x : q) x = u(rng);
  const float scale = scale_mult / std::sqrt(static_cast<float>(head_dim));
  std::vector<float> want(q.size(), -3.0f), got(q.size(), -3.0f);
  std::vector<float> scratch(static_cast<size_t>(n_ctx) + 1);
  AttendDenseRef(cache.layout, n_heads, q.data(), cache.k_ptrs.data(), cache.v_ptrs.data(), n_ctx,
                 scale, want.data(), scratch.data(), head_begin, head_end);
  path.fn(cache.layout, n_heads, q.data(), cache.k_ptrs.data(), cache.v_ptrs.data(), n_ctx, scale,
          got.data(), scratch.data(), head_begin, head_end);
  int failures = 0;
  for (size_t i = 0; i < q.size(); ++i) {
    // Outputs are convex combinations of V entries in [-1, 1].
    if (!(std::fabs(got[i] - want[i]) <= 2e-5f) && ++failures <= 3) {
      ADD_FAILURE() << path.name << " " << DTypeName(dt) << " bs=" << block_size
                    << " heads=" << n_heads << "/" << n_kv_heads << " hd=" << head_dim
                    << " ctx=" << n_ctx << " range=[" << head_begin << "," << head_end << ") [" << i
                    << "] got " << got[i] << " want " << want[i];
    }
  }
}

TEST(AttentionTest, MatchesReferenceAcrossShapes) {
  std::mt19937 rng(11);
  for (const Path& path : Paths()) {
    if (!path.available) {
      std::printf("[ SKIPPED  ] %s: CPU lacks it\n", path.name);
      continue;
    }
    for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
      for (int head_dim : {8, 12, 64, 100, 128, 256}) {
        for (auto [n_heads, n_kv] : {std::pair<int, int>{2, 2}, {6, 2}, {8, 1}, {15, 3}}) {
          for (int n_ctx : {1, 3, 17, 100}) {
            Check(path, dt, 16, n_heads, n_kv, head_dim, n_ctx, 1.0f, 0, n_heads, rng);
          }
        }
      }
    }
  }
}

TEST(AttentionTest, RaggedBlocksLongContextAndPeakedScores) {
  std::mt19937 rng(12);
  for (const Path& path : Paths()) {
    if (!path.available) continue;
    for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
      Check(path, dt, 5, 4, 2, 64, 37, 1.0f, 0, 4, rng);
      Check(path, dt, 128, 9, 3, 80, 300, 1.0f, 0, 9, rng);  // chunks of 64 inside a block
      Check(path, dt, 16, 8, 2, 32, 700, 1.0f, 0, 8, rng);
      Check(path, dt, 16, 4, 4, 64, 200, 40.0f, 0, 4, rng);  // near one-hot: rescaling
    }
  }
}

// Callers split heads across threads: only [head_begin, head_end) may be written, and a range
// may start or end inside a GQA group.
TEST(AttentionTest, HeadSubRanges) {
  std::mt19937 rng(13);
  for (const Path& path : Paths()) {
    if (!path.available) continue;
    for (auto [b, e] : {std::pair<int, int>{0, 5}, {5, 12}, {3, 4}, {7, 12}}) {
      Check(path, DType::kF16, 16, 12, 2, 64, 50, 1.0f, b, e, rng);
    }
  }
}

TEST(AttentionTest, DispatchUnderEveryIsaCap) {
  std::mt19937 rng(14);
  const Path dispatch{"dispatch", &AttendDense, true};
  for (CpuIsa cap : {CpuIsa::kScalar, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
    SetIsaCap(cap);
    Check(dispatch, DType::kBF16, 16, 6, 2, 72, 40, 1.0f, 0, 6, rng);
  }
  SetIsaCap(CpuIsa::kAvx512);
}

// The AVX-512 KV store writes the bits the scalar one does, for every dtype and for values
// that round up, down, to even, overflow F16, and are F16 or F32 subnormals.
TEST(AttentionTest, StoreKvAvx512MatchesReferenceBitForBit) {
  const CpuFeatures& f = GetCpuFeatures();
  if (!(f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq)) GTEST_SKIP() << "no AVX-512";
  std::mt19937 rng(15);
  std::uniform_real_distribution<float> u(-4.0f, 4.0f);
  std::uniform_int_distribution<uint32_t> bits;
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (int head_dim : {8, 40, 64, 128}) {
      DenseKvLayout l;
      l.dtype = dt;
      l.block_size = 4;
      l.n_kv_heads = 3;
      l.head_dim = head_dim;
      const size_t n = static_cast<size_t>(l.n_kv_heads) * head_dim;
      std::vector<float> k(n), v(n);
      for (size_t i = 0; i < n; ++i) {
        switch (i % 6) {
          case 0: k[i] = u(rng); break;
          case 1: k[i] = u(rng) * 1e-6f; break;   // F16 subnormal range
          case 2: k[i] = u(rng) * 3e4f; break;    // F16 overflow to inf
          case 3: k[i] = u(rng) * 1e-39f; break;  // F32 subnormal
          case 4: {                               // any non-NaN bit pattern
            uint32_t b = bits(rng);
            if ((b & 0x7f800000u) == 0x7f800000u) b &= 0xbfffffffu;
            std::memcpy(&k[i], &b, 4);
            break;
          }
          default:  // exact ties: halfway between two BF16 (odd i) or two F16 (even i) values
            k[i] = 1.0f + static_cast<float>(2 * (i % 5) + 1) * ((i / 6) % 2 ? 0x1p-8f : 0x1p-11f);
            break;
        }
        v[i] = -k[i] * 0.5f;
      }
      const size_t bytes = static_cast<size_t>(l.block_size) * n * (dt == DType::kF32 ? 4 : 2);
      std::vector<uint8_t> kr(bytes, 0xAB), vr(bytes, 0xAB), ka(bytes, 0xAB), va(bytes, 0xAB);
      for (int slot : {0, 3}) {
        StoreDenseKvRef(l, kr.data(), vr.data(), slot, k.data(), v.data());
        StoreDenseKvAvx512(l, ka.data(), va.data(), slot, k.data(), v.data());
      }
      EXPECT_EQ(ka, kr) << DTypeName(dt) << " head_dim " << head_dim;
      EXPECT_EQ(va, vr) << DTypeName(dt) << " head_dim " << head_dim;
    }
  }
}

}  // namespace
}  // namespace compressd::kernels
