// GGUF Q8_0 / Q4_0 run directly (kernels/ggml_quant.h): scalar decode matches the block
// definition, fused kernels match GemmRef, batch invariance, validation.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/gemm.h"
#include "kernels/ggml_quant.h"

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
  std::vector<std::pair<const char*, GemmFn>> paths = {{"ops", GgufQuantFormatOps().gemm}};
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

}  // namespace
}  // namespace compressd::kernels
