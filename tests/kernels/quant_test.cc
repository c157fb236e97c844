// Quantized formats: round-trip error bounds (pack -> DequantizeRows), and parity of every
// fast path (AVX2, AVX-512, Gemm() dispatch) against GemmRef over ragged shapes, plus batch
// invariance (a token's output does not depend on the other tokens or the row range).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/gemm.h"
#include "kernels/quant.h"
#include "kernels/types.h"

namespace compressd::kernels {
namespace {

std::vector<float> RandomMatrix(int64_t rows, int64_t cols, std::mt19937& rng, float outlier = 0) {
  std::normal_distribution<float> nd(0.0f, 0.05f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (auto& v : w) v = nd(rng);
  if (outlier > 0) {
    std::uniform_int_distribution<size_t> pick(0, w.size() - 1);
    for (int i = 0; i < static_cast<int>(w.size() / 100); ++i) w[pick(rng)] = outlier;
  }
  return w;
}

struct Case {
  std::string name;
  std::function<PackedQuant(const float*, int64_t, int64_t)> pack;
  double rel_rmse;  // bound of ||W - deq(W)|| / ||W||
};

std::vector<Case> Cases() {
  std::vector<Case> c;
  for (int g : {32, 64, 128}) {
    c.push_back({"int4-g" + std::to_string(g),
                 [g](const float* w, int64_t r, int64_t k) { return PackGroup(w, r, k, 4, g); },
                 0.12});
    c.push_back({"int3-g" + std::to_string(g),
                 [g](const float* w, int64_t r, int64_t k) { return PackGroup(w, r, k, 3, g); },
                 0.25});
    c.push_back({"int2-g" + std::to_string(g),
                 [g](const float* w, int64_t r, int64_t k) { return PackGroup(w, r, k, 2, g); },
                 0.55});
  }
  c.push_back({"int8g-g64", [](const float* w, int64_t r, int64_t k) { return PackGroup(w, r, k, 8, 64); }, 0.01});
  c.push_back({"int8", [](const float* w, int64_t r, int64_t k) { return PackInt8Rows(w, r, k, false); }, 0.02});
  c.push_back({"w8a8", [](const float* w, int64_t r, int64_t k) { return PackInt8Rows(w, r, k, true); }, 0.02});
  c.push_back({"llm-int8", [](const float* w, int64_t r, int64_t k) {
                 return PackLlmInt8(w, r, k, {0u, 5u, static_cast<uint32_t>(k - 1)});
               }, 0.02});
  c.push_back({"spqr3", [](const float* w, int64_t r, int64_t k) { return PackSpqr(w, r, k, 3, 0.01f); }, 0.2});
  c.push_back({"spqr4", [](const float* w, int64_t r, int64_t k) { return PackSpqr(w, r, k, 4, 0.01f); }, 0.1});
  c.push_back({"mixed", [](const float* w, int64_t r, int64_t k) {
                 std::vector<uint8_t> bits(static_cast<size_t>(r));
                 for (int64_t i = 0; i < r; ++i) bits[i] = (i % 3 == 0) ? 8 : 4;
                 return PackMixed(w, r, k, bits, 64);
               }, 0.12});
  return c;
}

double RelErr(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(a[i]) * a[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

TEST(QuantTest, RoundTripErrorBound) {
  std::mt19937 rng(1);
  for (const Case& c : Cases()) {
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{7, 172}, {16, 256}, {5, 704}, {3, 33}}) {
      const auto w = RandomMatrix(rows, cols, rng);
      PackedQuant p = c.pack(w.data(), rows, cols);
      ASSERT_TRUE(GemmSupports(p.view.format)) << c.name;
      std::vector<float> d(w.size());
      DequantizeRows(p.view, 0, rows, d.data());
      EXPECT_LT(RelErr(w, d), c.rel_rmse) << c.name << " " << rows << "x" << cols;
    }
  }
}

TEST(QuantTest, SpqrKeepsOutliers) {
  std::mt19937 rng(2);
  const int64_t rows = 8, cols = 256;
  auto w = RandomMatrix(rows, cols, rng, 2.0f);
  PackedQuant p = PackSpqr(w.data(), rows, cols, 3, 0.02f);
  std::vector<float> d(w.size());
  DequantizeRows(p.view, 0, rows, d.data());
  for (size_t i = 0; i < w.size(); ++i) {
    if (w[i] == 2.0f) {
      EXPECT_NEAR(d[i], 2.0f, 2e-3) << i;
    }
  }
}

TEST(QuantTest, LlmInt8OutlierColumnsExact) {
  std::mt19937 rng(3);
  const int64_t rows = 4, cols = 100;
  auto w = RandomMatrix(rows, cols, rng);
  PackedQuant p = PackLlmInt8(w.data(), rows, cols, {7, 50});
  std::vector<float> d(w.size());
  DequantizeRows(p.view, 0, rows, d.data());
  for (int64_t r = 0; r < rows; ++r) {
    EXPECT_EQ(d[r * cols + 7], F16ToF32(F32ToF16(w[r * cols + 7])));
    EXPECT_EQ(d[r * cols + 50], F16ToF32(F32ToF16(w[r * cols + 50])));
  }
}

using GemmFn = void (*)(const PackedWeight&, const float*, int64_t, float*, int64_t, int64_t,
                        int64_t);

TEST(QuantTest, FastPathsMatchReference) {
  const CpuFeatures& f = GetCpuFeatures();
  const bool avx2 = f.avx2 && f.fma && f.f16c;
  const bool avx512 = avx2 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512vnni;
  std::vector<std::pair<std::string, GemmFn>> paths;
  if (avx2) paths.push_back({"avx2", &GemmQuantAvx2});
  if (avx512) paths.push_back({"avx512", &GemmQuantAvx512});
  paths.push_back({"dispatch", &Gemm});
  std::mt19937 rng(4);
  for (const Case& c : Cases()) {
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{13, 172}, {24, 256}, {9, 704}, {5, 33}}) {
      const auto w = RandomMatrix(rows, cols, rng);
      PackedQuant p = c.pack(w.data(), rows, cols);
      for (int64_t n : {1, 2, 3, 4, 5, 9, 70}) {
        std::normal_distribution<float> nd(0.0f, 1.0f);
        std::vector<float> x(static_cast<size_t>(n * cols));
        for (auto& v : x) v = nd(rng);
        const int64_t ldy = rows + 3;
        std::vector<float> ref(static_cast<size_t>(n * ldy), -7.0f);
        // W8A8/LLM.int8 quantize activations: their definition is GemmQuantRef's integer dot;
        // GemmRef (fp32 activations) must still agree within the activation rounding.
        const bool a8 = c.name == "w8a8" || c.name == "llm-int8";
        GemmQuantRef(p.view, x.data(), n, ref.data(), ldy, 0, rows);
        if (a8) {
          std::vector<float> fp(ref.size(), -7.0f);
          GemmRef(p.view, x.data(), n, fp.data(), ldy, 0, rows);
          for (int64_t t = 0; t < n; ++t)
            for (int64_t r = 0; r < rows; ++r)
              EXPECT_NEAR(fp[t * ldy + r], ref[t * ldy + r], 0.06 * (std::fabs(fp[t * ldy + r]) + 1)) << c.name;
        } else {
          GemmRef(p.view, x.data(), n, ref.data(), ldy, 0, rows);
        }
        double scale = 0;
        for (int64_t t = 0; t < n; ++t)
          for (int64_t r = 0; r < rows; ++r) scale = std::max(scale, std::fabs(double(ref[t * ldy + r])));
        for (auto& [pname, fn] : paths) {
          std::vector<float> out(ref.size(), -7.0f);
          fn(p.view, x.data(), n, out.data(), ldy, 0, rows);
          // Sub-range must only write its own rows.
          std::vector<float> part(ref.size(), -7.0f);
          fn(p.view, x.data(), n, part.data(), ldy, 1, rows - 1);
          for (int64_t t = 0; t < n; ++t) {
            for (int64_t r = 0; r < ldy; ++r) {
              const size_t i = t * ldy + r;
              if (r >= rows) {
                EXPECT_EQ(out[i], -7.0f);
                continue;
              }
              ASSERT_NEAR(out[i], ref[i], 1e-4 * (scale + 1)) << c.name << " " << pname << " "
                                                            << rows << "x" << cols << " n=" << n
                                                            << " t=" << t << " r=" << r;
              if (r >= 1 && r < rows - 1) {
                EXPECT_EQ(part[i], out[i]) << "row range changed the result";
              } else {
                EXPECT_EQ(part[i], -7.0f);
              }
            }
          }
        }
      }
    }
  }
}

TEST(QuantTest, BatchInvariance) {
  std::mt19937 rng(5);
  const int64_t rows = 37, cols = 320;
  const auto w = RandomMatrix(rows, cols, rng);
  for (const Case& c : Cases()) {
    PackedQuant p = c.pack(w.data(), rows, cols);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    const int64_t n = 16;
    std::vector<float> x(static_cast<size_t>(n * cols));
    for (auto& v : x) v = nd(rng);
    std::vector<float> all(static_cast<size_t>(n * rows));
    Gemm(p.view, x.data(), n, all.data(), rows, 0, rows);
    for (int64_t t = 0; t < n; ++t) {
      std::vector<float> one(static_cast<size_t>(rows));
      Gemm(p.view, x.data() + t * cols, 1, one.data(), rows, 0, rows);
      for (int64_t r = 0; r < rows; ++r) {
        ASSERT_EQ(one[r], all[t * rows + r]) << c.name << " t=" << t << " r=" << r;
      }
    }
  }
}

}  // namespace
}  // namespace compressd::kernels
