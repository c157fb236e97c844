// GGUF Q8_0 / Q4_0 run directly (kernels/ggml_quant.h): scalar decode matches the block
// definition, fused kernels match GemmRef, batch invariance, validation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/gemm.h"
#include "kernels/ggml_quant.h"
#include "kernels/quant.h"

namespace compressd::kernels {
namespace {

struct Blocks {
  std::vector<uint8_t> bytes;
  std::vector<float> expect;
  PackedWeight w;
};

Blocks Make(bool q8, int64_t rows, int64_t cols, std::mt19937& rng) {
  Blocks b;
  b.w.format = q8 ? GgufQ8_0Format() : GgufQ4_0Format();
  b.w.rows = rows;
  b.w.cols = cols;
  b.bytes.resize(GgufQuantBytes(b.w.format, rows, cols) + 1);
  b.expect.resize(rows * cols);
  std::uniform_int_distribution<int> q(0, 255);
  std::uniform_real_distribution<float> d(-0.05f, 0.05f);
  const int64_t nb = rows * cols / 32;
  for (int64_t i = 0; i < nb; ++i) {
    const uint16_t dh = F32ToF16(d(rng));
    const float df = F16ToF32(dh);
    if (q8) {
      auto* blk = reinterpret_cast<GgufBlockQ8_0*>(b.bytes.data()) + i;
      blk->d = dh;
      for (int j = 0; j < 32; ++j) {
        blk->qs[j] = static_cast<int8_t>(q(rng) - 128);
        b.expect[i * 32 + j] = df * blk->qs[j];
      }
    } else {
      auto* blk = reinterpret_cast<GgufBlockQ4_0*>(b.bytes.data()) + i;
      blk->d = dh;
      for (int j = 0; j < 16; ++j) {
        blk->qs[j] = static_cast<uint8_t>(q(rng));
        b.expect[i * 32 + j] = df * ((blk->qs[j] & 15) - 8);
        b.expect[i * 32 + j + 16] = df * ((blk->qs[j] >> 4) - 8);
      }
    }
  }
  b.w.data = b.bytes.data();
  b.w.data_bytes = GgufQuantBytes(b.w.format, rows, cols);
  return b;
}

TEST(GgufQuant, DecodeMatchesBlockDefinition) {
  std::mt19937 rng(1);
  for (bool q8 : {true, false}) {
    Blocks b = Make(q8, 5, 96, rng);
    EXPECT_EQ(ValidateGgufQuant(b.w), "");
    std::vector<float> got(5 * 96);
    GgufQuantFormatOps().dequantize_rows(b.w, 0, 5, got.data());
    EXPECT_EQ(got, b.expect);
  }
}

TEST(GgufQuant, Validate) {
  std::mt19937 rng(2);
  Blocks b = Make(true, 2, 64, rng);
  b.w.data_bytes -= 1;
  EXPECT_NE(ValidateGgufQuant(b.w), "");
  b = Make(false, 2, 64, rng);
  b.w.cols = 48;
  EXPECT_NE(ValidateGgufQuant(b.w), "");
  b = Make(false, 2, 64, rng);
  b.w.format.variant = 102;
  EXPECT_NE(ValidateGgufQuant(b.w), "");
}

using GemmFn = void (*)(const PackedWeight&, const float*, int64_t, float*, int64_t, int64_t,
                        int64_t);

TEST(GgufQuant, GemmParity) {
  const CpuFeatures& f = GetCpuFeatures();
  std::vector<std::pair<const char*, GemmFn>> paths;
  // With VNNI the table takes the int8-activation path, checked in GemmA8Parity.
  if (!GgufUsesA8(GgufQ4_0Format())) paths.push_back({"ops", GgufQuantFormatOps().gemm});
  if (f.avx2 && f.fma && f.f16c) paths.push_back({"avx2", &GemmGgufAvx2});
  if (f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq) paths.push_back({"avx512", &GemmGgufAvx512});
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (bool q8 : {true, false}) {
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 32}, {7, 96}, {9, 1056}, {5, 2048}}) {
      Blocks b = Make(q8, rows, cols, rng);
      for (int64_t n : {1, 3, 4, 6, 70}) {
        std::vector<float> x(n * cols);
        for (float& v : x) v = u(rng);
        std::vector<float> ref(n * rows), y(n * rows);
        GemmRef(b.w, x.data(), n, ref.data(), rows, 0, rows);
        for (auto [name, fn] : paths) {
          std::fill(y.begin(), y.end(), -1.0f);
          fn(b.w, x.data(), n, y.data(), rows, 0, rows);
          for (int64_t i = 0; i < n * rows; ++i) {
            ASSERT_NEAR(y[i], ref[i], 1e-4 * (1 + std::sqrt(static_cast<double>(cols))))
                << name << " q8=" << q8 << " " << rows << "x" << cols << " n=" << n << " i=" << i;
          }
        }
        // Batch invariance: token 0 alone, row range [1, rows).
        if (rows > 1) {
          std::vector<float> one(rows, 0.0f);
          GgufQuantFormatOps().gemm(b.w, x.data(), 1, one.data(), rows, 1, rows);
          std::vector<float> all(n * rows);
          GgufQuantFormatOps().gemm(b.w, x.data(), n, all.data(), rows, 0, rows);
          for (int64_t r = 1; r < rows; ++r) ASSERT_EQ(one[r], all[r]);
        }
      }
    }
  }
}

// Activations quantized once (ActCache) and shared by several GEMMs give exactly the outputs
// of Gemm() without the cache; a Q4_0 cache is not used for Q8_0 weights (another layout)
// nor for another input.
TEST(GgufQuant, SharedActivationsMatchPerCallQuantization) {
  std::mt19937 rng(13);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  ActCache cache;
  for (bool q8 : {false, true}) {
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{9, 96}, {12, 1056}}) {
      Blocks a = Make(q8, rows, cols, rng), b = Make(q8, rows + 3, cols, rng);
      Blocks other = Make(!q8, rows, cols, rng);
      for (int64_t n : {1, 5, 70}) {
        std::vector<float> x(n * cols), x2(n * cols);
        for (float& v : x) v = u(rng);
        for (float& v : x2) v = u(rng);
        const bool shared = ActCacheReserve(a.w, x.data(), n, &cache);
        EXPECT_EQ(shared, ActiveIsa() == CpuIsa::kAvx512 && GgufUsesA8(a.w.format));
        ActCacheFill(0, n / 2, &cache);
        ActCacheFill(n / 2, n, &cache);
        for (const Blocks* w : {&a, &b, &other}) {
          const int64_t r = w->w.rows;
          std::vector<float> want(n * r), got(n * r, -1.0f);
          Gemm(w->w, x.data(), n, want.data(), r, 0, r);
          Gemm(w->w, x.data(), n, got.data(), r, 0, r / 2, &cache);
          Gemm(w->w, x.data(), n, got.data(), r, r / 2, r, &cache);
          ASSERT_EQ(got, want) << "q8=" << q8 << " " << r << "x" << cols << " n=" << n;
        }
        std::vector<float> want(n * rows), got(n * rows);
        Gemm(a.w, x2.data(), n, want.data(), rows, 0, rows);
        Gemm(a.w, x2.data(), n, got.data(), rows, 0, rows, &cache);
        ASSERT_EQ(got, want) << "cache used for another x";
        cache.Clear();
      }
    }
  }
}

// The A8 oracle stays within the activation rounding bound of the exact product:
// |y - exact| <= sum_c |w_c| * s_block(c) / 2.
TEST(GgufQuant, A8RefWithinActivationRounding) {
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (bool q8 : {true, false}) {
    const int64_t rows = 6, cols = 1056, n = 3;
    Blocks b = Make(q8, rows, cols, rng);
    std::vector<float> x(n * cols);
    for (float& v : x) v = u(rng);
    std::vector<float> exact(n * rows), y(n * rows);
    GemmRef(b.w, x.data(), n, exact.data(), rows, 0, rows);
    GemmGgufA8Ref(b.w, x.data(), n, y.data(), rows, 0, rows);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t r = 0; r < rows; ++r) {
        double bound = 0.0;
        for (int64_t c0 = 0; c0 < cols; c0 += 32) {
          float amax = 0.0f;
          for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[t * cols + c0 + j]));
          for (int j = 0; j < 32; ++j)
            bound += std::fabs(b.expect[r * cols + c0 + j]) * (amax / 127.0f) / 2;
        }
        EXPECT_LE(std::fabs(y[t * rows + r] - exact[t * rows + r]), bound * 1.001 + 1e-6)
            << "q8=" << q8 << " t=" << t << " r=" << r;
      }
    }
  }
}

TEST(GgufQuant, GemmA8Parity) {
  const CpuFeatures& f = GetCpuFeatures();
  if (!(f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512vnni)) {
    GTEST_SKIP() << "no AVX-512 VNNI";
  }
  std::vector<std::pair<const char*, GemmFn>> paths = {{"a8", &GemmGgufA8Avx512}};
  if (GgufUsesA8(GgufQ8_0Format())) paths.push_back({"ops", GgufQuantFormatOps().gemm});
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (bool q8 : {true, false}) {
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 32}, {7, 96}, {9, 1056}, {5, 2048},
                              {13, 544}}) {
      Blocks b = Make(q8, rows, cols, rng);
      for (int64_t n : {1, 2, 3, 4, 5, 9, 70}) {
        std::vector<float> x(n * cols);
        for (float& v : x) v = u(rng);
        if (n == 2) std::fill(x.begin() + cols, x.begin() + cols + 32, 0.0f);  // an amax-0 block
        std::vector<float> ref(n * rows), y(n * rows);
        GemmGgufA8Ref(b.w, x.data(), n, ref.data(), rows, 0, rows);
        // Scale of the products: sum of |d * s * q * qx| <= 0.05 * (1/127) * 128 * 127 * cols.
        const double tol = 1e-6 * 0.05 * 128 * static_cast<double>(cols);
        for (auto [name, fn] : paths) {
          std::fill(y.begin(), y.end(), -1.0f);
          fn(b.w, x.data(), n, y.data(), rows, 0, rows);
          for (int64_t i = 0; i < n * rows; ++i) {
            ASSERT_NEAR(y[i], ref[i], tol)
                << name << " q8=" << q8 << " " << rows << "x" << cols << " n=" << n << " i=" << i;
          }
        }
        // Batch and row-range invariance: each token alone, rows split at every offset.
        std::vector<float> all(n * rows);
        GemmGgufA8Avx512(b.w, x.data(), n, all.data(), rows, 0, rows);
        for (int64_t t = 0; t < n; t += std::max<int64_t>(1, n / 3)) {
          for (int64_t split = 0; split < rows; ++split) {
            std::vector<float> one(rows, -1.0f);
            GemmGgufA8Avx512(b.w, x.data() + t * cols, 1, one.data(), rows, 0, split);
            GemmGgufA8Avx512(b.w, x.data() + t * cols, 1, one.data(), rows, split, rows);
            for (int64_t r = 0; r < rows; ++r) {
              ASSERT_EQ(one[r], all[t * rows + r])
                  << "q8=" << q8 << " " << rows << "x" << cols << " n=" << n << " t=" << t
                  << " split=" << split << " r=" << r;
            }
          }
        }
        // A row range in the middle of a batch.
        if (rows > 2) {
          std::vector<float> part(n * rows, -1.0f);
          GemmGgufA8Avx512(b.w, x.data(), n, part.data(), rows, 1, rows - 1);
          for (int64_t t = 0; t < n; ++t)
            for (int64_t r = 1; r < rows - 1; ++r) ASSERT_EQ(part[t * rows + r], all[t * rows + r]);
        }
      }
    }
  }
}

// The split layout (kLayoutGgufSplit, ggml_quant.h): codes (Q4_0: superblock order; Q8_0:
// q + 128) then fp16 scales, in place or copied; it decodes to the same values, and the int
// group kernel that runs it (W4A8 int4 / W8A8 int8, group 32) matches the format's A8
// definition (GemmGgufA8Ref on the file layout) with batch, row-range and shared-activation
// invariance.
Blocks Split(const Blocks& b, bool in_place) {
  Blocks s = b;
  auto* dst = s.bytes.data();
  if (in_place) {
    GgufToSplit(b.w.format, dst, dst, b.w.rows, b.w.cols);
  } else {
    std::vector<uint8_t> out(b.w.data_bytes);
    GgufToSplit(b.w.format, b.bytes.data(), out.data(), b.w.rows, b.w.cols);
    std::copy(out.begin(), out.end(), dst);
  }
  s.w.data = dst;
  s.w.format.layout = kLayoutGgufSplit;
  return s;
}

// {rows, cols}: no full 512-column span (64, 192), one span and a tail (576), spans only
// (1536), spans and a 64-column tail (2112).
const std::pair<int64_t, int64_t> kSplitShapes[] = {{3, 64}, {7, 192}, {5, 576}, {4, 1536}, {6, 2112}};

class GgufSplit : public ::testing::TestWithParam<bool> {};  // Q8_0 (true) or Q4_0

TEST_P(GgufSplit, DecodesToTheFileValues) {
  const bool q8 = GetParam();
  std::mt19937 rng(21);
  for (auto [rows, cols] : kSplitShapes) {
    Blocks b = Make(q8, rows, cols, rng);
    for (bool in_place : {false, true}) {
      Blocks s = Split(b, in_place);
      EXPECT_EQ(ValidateGgufQuant(s.w), "");
      EXPECT_TRUE(GgufQuantFormatOps().supports(s.w.format));
      EXPECT_FALSE(GgufUsesA8(s.w.format));
      std::vector<float> got(rows * cols, -1.0f);
      GgufQuantFormatOps().dequantize_rows(s.w, 0, rows, got.data());
      EXPECT_EQ(got, b.expect) << rows << "x" << cols << " in_place=" << in_place;
      // Part of a row (GgufDecodeRef's window).
      std::vector<float> part(64);
      GgufDecodeRef(s.w, rows - 1, cols - 64, 64, part.data());
      EXPECT_EQ(part, std::vector<float>(b.expect.end() - 64, b.expect.end()));
    }
  }
  // Only cols % 64 == 0 takes it, and only from the file layout.
  Blocks b96 = Make(q8, 2, 96, rng);
  EXPECT_FALSE(GgufSplitApplies(b96.w.format, 96));
  b96.w.format.layout = kLayoutGgufSplit;
  EXPECT_NE(ValidateGgufQuant(b96.w), "");
  EXPECT_FALSE(GgufSplitApplies(b96.w.format, 128));
  WeightFormat other = b96.w.format;
  other.layout = kLayoutGgufSplit + 1;
  EXPECT_FALSE(GgufQuantFormatOps().supports(other));
}

TEST_P(GgufSplit, KernelMatchesTheFormatsDefinition) {
  const bool q8 = GetParam();
  const CpuFeatures& f = GetCpuFeatures();
  if (!(f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512vnni) ||
      ActiveIsa() != CpuIsa::kAvx512) {
    GTEST_SKIP() << "no AVX-512 VNNI";
  }
  EXPECT_TRUE(GgufSplitApplies(q8 ? GgufQ8_0Format() : GgufQ4_0Format(), 128));
  std::mt19937 rng(22);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  ActCache cache;
  for (auto [rows, cols] : kSplitShapes) {
    Blocks b = Make(q8, rows, cols, rng);
    Blocks s = Split(b, true);
    ASSERT_EQ(GemmUsesQuant4A8(s.w.format), !q8);
    ASSERT_EQ(GemmUsesQuant8A8(s.w.format), q8);
    for (int64_t n : {1, 2, 3, 7, 70}) {
      std::vector<float> x(n * cols);
      for (float& v : x) v = u(rng);
      if (n == 2) std::fill(x.begin() + cols, x.begin() + cols + 32, 0.0f);  // an amax-0 block
      std::vector<float> ref(n * rows), ref_split(n * rows), y(n * rows, -1.0f);
      GemmGgufA8Ref(b.w, x.data(), n, ref.data(), rows, 0, rows);
      GemmGgufA8Ref(s.w, x.data(), n, ref_split.data(), rows, 0, rows);
      ASSERT_EQ(ref_split, ref);
      Gemm(s.w, x.data(), n, y.data(), rows, 0, rows);
      // As GemmA8Parity; the -8 d (-128 d) term is summed apart (min * sum of x^), so a few
      // ulps of the partial sums differ from the reference.
      const double tol = 1e-6 * 0.05 * (q8 ? 256 : 128) * static_cast<double>(cols);
      for (int64_t i = 0; i < n * rows; ++i) {
        ASSERT_NEAR(y[i], ref[i], tol) << rows << "x" << cols << " n=" << n << " i=" << i;
      }
      // Each token alone and rows split at every offset give the batch's outputs.
      for (int64_t t = 0; t < n; t += std::max<int64_t>(1, n / 3)) {
        for (int64_t split = 0; split < rows; ++split) {
          std::vector<float> one(rows, -1.0f);
          Gemm(s.w, x.data() + t * cols, 1, one.data(), rows, 0, split);
          Gemm(s.w, x.data() + t * cols, 1, one.data(), rows, split, rows);
          for (int64_t r = 0; r < rows; ++r) ASSERT_EQ(one[r], y[t * rows + r]);
        }
      }
      // Activations shared through an ActCache give the same outputs.
      ASSERT_TRUE(ActCacheReserve(s.w, x.data(), n, &cache));
      ActCacheFill(0, n, &cache);
      std::vector<float> got(n * rows, -1.0f);
      Gemm(s.w, x.data(), n, got.data(), rows, 0, rows, &cache);
      ASSERT_EQ(got, y) << rows << "x" << cols << " n=" << n;
      cache.Clear();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, GgufSplit, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "Q8_0" : "Q4_0"; });

}  // namespace
}  // namespace compressd::kernels
