// Sparse formats (kernels/sparse.h): round trip of pack -> dequantize against the kept
// values, parity of the AVX-512/AVX2 fused kernels and Gemm() against GemmRef over ragged
// shapes, batch invariance (a row/token result is identical for any n and row range), and
// validation of corrupted buffers.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/format_ops.h"
#include "kernels/gemm.h"
#include "kernels/sparse.h"

namespace compressd::kernels {
namespace {

enum class Pat { kUnstructured, kTwoFour, kGroup4, kGroup16 };

struct Case {
  SparsePacked packed;
  std::vector<float> expect;  // dense values the format must decode to
};

Case Make(Pat pat, int64_t rows, int64_t cols, std::mt19937& rng, double density = 0.5) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::bernoulli_distribution keep_d(density);
  std::vector<float> w(rows * cols);
  for (float& v : w) v = u(rng);
  Case c;
  c.expect.assign(rows * cols, 0.0f);
  if (pat == Pat::kUnstructured || pat == Pat::kTwoFour) {
    std::vector<uint8_t> keep(rows * cols, 0);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t g = 0; g < cols; g += 4) {
        if (pat == Pat::kUnstructured) {
          for (int64_t j = g; j < std::min(cols, g + 4); ++j) keep[r * cols + j] = keep_d(rng);
        } else {
          std::vector<int> pos = {0, 1, 2, 3};
          std::shuffle(pos.begin(), pos.end(), rng);
          const int k = static_cast<int>(rng() % 3);  // 0..2 kept
          for (int i = 0; i < k; ++i) {
            if (g + pos[i] < cols) keep[r * cols + g + pos[i]] = 1;
          }
        }
      }
    }
    c.packed = pat == Pat::kUnstructured ? PackSparseUnstructured(w.data(), keep.data(), rows, cols)
                                         : PackSparseTwoFour(w.data(), keep.data(), rows, cols);
    for (int64_t i = 0; i < rows * cols; ++i) {
      if (keep[i]) c.expect[i] = F16ToF32(F32ToF16(w[i]));
    }
  } else {
    const int64_t ng = (cols + 15) / 16;
    std::vector<uint8_t> keep(rows * ng);
    for (auto& k : keep) k = keep_d(rng);
    const int bits = pat == Pat::kGroup4 ? 4 : 16;
    c.packed = PackSparseGroup(w.data(), keep.data(), rows, cols, bits);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t g = 0; g < ng; ++g) {
        if (!keep[r * ng + g]) continue;
        float amax = 0;
        for (int64_t c2 = g * 16; c2 < std::min(cols, g * 16 + 16); ++c2) {
          amax = std::max(amax, std::fabs(w[r * cols + c2]));
        }
        const float d = F16ToF32(F32ToF16(amax / 7.0f));
        for (int64_t c2 = g * 16; c2 < std::min(cols, g * 16 + 16); ++c2) {
          const float v = w[r * cols + c2];
          c.expect[r * cols + c2] =
              bits == 16 ? F16ToF32(F32ToF16(v))
                         : d * (std::clamp(std::nearbyint(v / d) + 8.0f, 0.0f, 15.0f) - 8.0f);
        }
      }
    }
  }
  return c;
}

const Pat kPats[] = {Pat::kUnstructured, Pat::kTwoFour, Pat::kGroup4, Pat::kGroup16};

TEST(Sparse, RoundTripAndValid) {
  std::mt19937 rng(1);
  for (Pat pat : kPats) {
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {3, 17}, {5, 64}, {7, 1030},
                              {4, 2048}, {2, 2111}}) {
      Case c = Make(pat, rows, cols, rng);
      const PackedWeight w = c.packed.View();
      EXPECT_EQ(ValidateSparse(w), "") << static_cast<int>(pat) << " " << rows << "x" << cols;
      ASSERT_TRUE(GemmSupports(w.format));
      std::vector<float> got(rows * cols);
      DequantizeRows(w, 0, rows, got.data());
      for (int64_t i = 0; i < rows * cols; ++i) {
        if (pat == Pat::kGroup4) {
          ASSERT_NEAR(got[i], c.expect[i], 1e-6) << i;
        } else {
          ASSERT_EQ(got[i], c.expect[i]) << static_cast<int>(pat) << " " << i;
        }
      }
    }
  }
}

TEST(Sparse, ValidateRejectsCorruption) {
  std::mt19937 rng(2);
  for (Pat pat : kPats) {
    Case c = Make(pat, 4, 100, rng);
    PackedWeight w = c.packed.View();
    w.data_bytes -= 2 * kSparsePadHalves + 2;
    EXPECT_NE(ValidateSparse(w), "");
    w = c.packed.View();
    w.aux_bytes[0] -= 1;
    EXPECT_NE(ValidateSparse(w), "");
    w = c.packed.View();
    w.format.group_size = 7;
    w.format.bits = 3;
    EXPECT_NE(ValidateSparse(w), "");
  }
  Case c = Make(Pat::kTwoFour, 2, 16, rng);
  c.packed.aux[0][0] = 0x00;  // index pair (0, 0): not increasing
  EXPECT_NE(ValidateSparse(c.packed.View()), "");
}

using GemmFn = void (*)(const PackedWeight&, const float*, int64_t, float*, int64_t, int64_t,
                        int64_t);

std::vector<std::pair<const char*, GemmFn>> Paths() {
  const CpuFeatures& f = GetCpuFeatures();
  std::vector<std::pair<const char*, GemmFn>> p;
  if (f.avx2 && f.fma && f.f16c) p.push_back({"avx2", &GemmSparseAvx2});
  if (f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq) p.push_back({"avx512", &GemmSparseAvx512});
  p.push_back({"dispatch", &Gemm});
  return p;
}

TEST(Sparse, GemmParityRaggedShapes) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (Pat pat : kPats) {
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {5, 33}, {9, 64}, {13, 1000},
                              {6, 1024}, {8, 2500}}) {
      Case c = Make(pat, rows, cols, rng);
      const PackedWeight w = c.packed.View();
      for (int64_t n : {1, 2, 3, 4, 5, 9, 70}) {
        std::vector<float> x(n * cols);
        for (float& v : x) v = u(rng);
        const int64_t ldy = rows + 3;
        std::vector<float> ref(n * ldy, -7.0f);
        const int64_t rb = rows > 2 ? 1 : 0, re = rows;
        GemmRef(w, x.data(), n, ref.data(), ldy, rb, re);
        for (auto [name, fn] : Paths()) {
          std::vector<float> y(n * ldy, -7.0f);
          fn(w, x.data(), n, y.data(), ldy, rb, re);
          for (int64_t t = 0; t < n; ++t) {
            for (int64_t r = 0; r < ldy; ++r) {
              const float e = ref[t * ldy + r], g = y[t * ldy + r];
              ASSERT_NEAR(g, e, 1e-4 * (1 + std::sqrt(static_cast<double>(cols))))
                  << name << " pat " << static_cast<int>(pat) << " " << rows << "x" << cols
                  << " n=" << n << " t=" << t << " r=" << r;
            }
          }
        }
      }
    }
  }
}

TEST(Sparse, BatchInvariant) {
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int64_t rows = 23, cols = 2100, n = 67;
  for (Pat pat : kPats) {
    Case c = Make(pat, rows, cols, rng);
    const PackedWeight w = c.packed.View();
    std::vector<float> x(n * cols);
    for (float& v : x) v = u(rng);
    for (auto [name, fn] : Paths()) {
      std::vector<float> all(n * rows);
      fn(w, x.data(), n, all.data(), rows, 0, rows);
      for (int64_t sub : {2, 3, 4, 5, 9}) {  // every fused / tiled token count
        std::vector<float> part(sub * rows);
        fn(w, x.data(), sub, part.data(), rows, 0, rows);
        for (int64_t i = 0; i < sub * rows; ++i) ASSERT_EQ(part[i], all[i]) << name << " n=" << sub;
      }
      for (int64_t t : {int64_t{0}, int64_t{5}, n - 1}) {
        for (int64_t rb : {0, 3, 22}) {
          std::vector<float> one(rows, 0.0f);
          fn(w, x.data() + t * cols, 1, one.data(), rows, rb, rb + 1);
          ASSERT_EQ(one[rb], all[t * rows + rb]) << name << " t=" << t << " r=" << rb;
        }
      }
    }
  }
}

}  // namespace
}  // namespace compressd::kernels
