// W8A8-chunk path of 8-bit group codes and per-row int8 (kInt8Row): the scalar definition
// (GemmQuantA8Ref) against the exact fp32 product, the AVX-512 VNNI kernel
// (GemmQuant8A8Avx512) against the definition, and batch / row-range invariance: a token's
// outputs are bit-identical alone, in any batch of 1..17 tokens, and for any row split.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/gemm.h"
#include "kernels/quant.h"

namespace compressd::kernels {
namespace {

std::vector<float> Normal(int64_t count, float sd, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, sd);
  std::vector<float> v(static_cast<size_t>(count));
  for (auto& e : v) e = nd(rng);
  return v;
}

struct Fmt {
  std::string name;
  int group;  // 0: per-row int8 (kInt8Row); < 0: 4-bit group -group (invariance test)
  int bits = 8;  // group formats: code width (3- and 2-bit codes share this kernel)
};
const Fmt kFmts[] = {{"int8-row", 0},      {"int8-g32", 32},     {"int8-g64", 64},
                     {"int8-g128", 128},   {"int8-g256", 256},   {"int3-g32", 32, 3},
                     {"int3-g64", 64, 3},  {"int3-g128", 128, 3}, {"int2-g32", 32, 2},
                     {"int2-g64", 64, 2}};

PackedQuant Pack(const Fmt& f, const std::vector<float>& w, int64_t rows, int64_t cols) {
  if (f.group == 0) return PackInt8Rows(w.data(), rows, cols, false);
  return PackGroup(w.data(), rows, cols, f.bits, f.group);
}

bool HasVnni() {
  const CpuFeatures& f = GetCpuFeatures();
  return f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512vnni;
}

// Sum over columns of |w_c x_c| of row r and token t: the scale of float rounding errors.
double Magnitude(const std::vector<float>& deq, const std::vector<float>& x, int64_t cols,
                 int64_t r, int64_t t) {
  double mag = 0;
  for (int64_t c = 0; c < cols; ++c) mag += std::fabs(double(deq[r * cols + c]) * x[t * cols + c]);
  return mag;
}

// The definition against the fp32 product: the only difference is the rounding of each
// activation to its chunk's int8 grid (at most s/2 per column), so
// |y_a8 - y| <= sum_c |w_c| * s_chunk(c) / 2 (plus float rounding of the sums).
TEST(Quant8A8Test, RefWithinActivationRoundingBound) {
  std::mt19937 rng(11);
  for (const Fmt& fmt : kFmts) {
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{11, 172}, {8, 2048}, {5, 33}}) {
      const auto w = Normal(rows * cols, 0.05f, rng);
      PackedQuant p = Pack(fmt, w, rows, cols);
      const int64_t n = 3, cp = QuantPaddedCols(p.view.format, cols);
      auto x = Normal(n * cols, 1.0f, rng);
      x[0] = 40.0f;  // an outlier: its chunk gets a coarse grid, the others do not
      std::vector<float> exact(static_cast<size_t>(n * rows)), a8 = exact;
      GemmRef(p.view, x.data(), n, exact.data(), rows, 0, rows);
      GemmQuantA8Ref(p.view, x.data(), n, a8.data(), rows, 0, rows);
      std::vector<float> deq(static_cast<size_t>(rows * cols));
      DequantizeRows(p.view, 0, rows, deq.data());
      std::vector<int8_t> q(static_cast<size_t>(cp));
      std::vector<float> s(static_cast<size_t>(cp / 32));
      double worst = 0;  // largest |error| / bound seen: the bound must also not be loose
      for (int64_t t = 0; t < n; ++t) {
        quant_internal::QuantizeChunksQ8(x.data() + t * cols, cols, cp, q.data(), s.data());
        for (int64_t r = 0; r < rows; ++r) {
          double bound = 0;
          for (int64_t c = 0; c < cols; ++c) bound += std::fabs(deq[r * cols + c]) * s[c / 32] * 0.5;
          const double err = std::fabs(double(a8[t * rows + r]) - exact[t * rows + r]);
          EXPECT_LE(err, bound + 1e-6 * Magnitude(deq, x, cols, r, t))
              << fmt.name << " " << rows << "x" << cols;
          worst = std::max(worst, err / bound);
        }
      }
      // Not zero: the activations really are quantized.
      EXPECT_GT(worst, 1e-4) << fmt.name << " cols=" << cols;
    }
  }
}

// Every format, ragged column counts (padding inside the last block), partial last group
// window (ng not a multiple of 16) and tile shapes (4-row decode, 2 x 6 batch, 1-row tails).
TEST(Quant8A8Test, KernelMatchesReference) {
  if (!HasVnni()) GTEST_SKIP() << "CPU lacks AVX-512 VNNI";
  std::mt19937 rng(12);
  for (const Fmt& fmt : kFmts) {
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{7, 64}, {6, 192}, {9, 600},
                              {5, 33}, {4, 2048 + 64}, {3, 4096 + 256}}) {
      const auto w = Normal(rows * cols, 0.05f, rng);
      PackedQuant p = Pack(fmt, w, rows, cols);
      std::vector<float> deq(static_cast<size_t>(rows * cols));
      DequantizeRows(p.view, 0, rows, deq.data());
      for (int64_t n : {1, 2, 7, 13, 65}) {
        auto x = Normal(n * cols, 1.0f, rng);
        const int64_t ldy = rows + 2;
        std::vector<float> ref(static_cast<size_t>(n * ldy), -7.0f), out = ref;
        GemmQuantA8Ref(p.view, x.data(), n, ref.data(), ldy, 0, rows);
        GemmQuant8A8Avx512(p.view, x.data(), n, out.data(), ldy, 0, rows);
        for (int64_t t = 0; t < n; ++t) {
          for (int64_t r = 0; r < ldy; ++r) {
            if (r >= rows) {
              ASSERT_EQ(out[t * ldy + r], -7.0f) << "wrote past its rows";
              continue;
            }
            ASSERT_NEAR(out[t * ldy + r], ref[t * ldy + r],
                        1e-5 * Magnitude(deq, x, cols, r, t) + 1e-6)
                << fmt.name << " " << rows << "x" << cols << " n=" << n << " t=" << t
                << " r=" << r;
          }
        }
      }
    }
  }
}

// Gemm() takes the A8 path on a VNNI CPU (QuantUsesA8), so its result is the definition's.
TEST(Quant8A8Test, DispatchUsesA8WhereItSaysSo) {
  std::mt19937 rng(13);
  const int64_t rows = 6, cols = 320, n = 3;
  for (const Fmt& fmt : kFmts) {
    const auto w = Normal(rows * cols, 0.05f, rng);
    PackedQuant p = Pack(fmt, w, rows, cols);
    // Per-row int8 takes the A16 path (QuantUsesA16); 8-bit groups take A8 on VNNI.
    EXPECT_EQ(QuantUsesA8(p.view.format),
              fmt.group > 0 && ActiveIsa() == CpuIsa::kAvx512 && HasVnni())
        << fmt.name;
    auto x = Normal(n * cols, 1.0f, rng);
    std::vector<float> ref(static_cast<size_t>(n * rows)), out = ref;
    if (QuantUsesA8(p.view.format)) {
      GemmQuantA8Ref(p.view, x.data(), n, ref.data(), rows, 0, rows);
    } else if (QuantUsesA16(p.view.format)) {  // per-row int8 on VNNI: the A16 path
      GemmQuant8A16Ref(p.view, x.data(), n, ref.data(), rows, 0, rows);
    } else {
      GemmRef(p.view, x.data(), n, ref.data(), rows, 0, rows);
    }
    Gemm(p.view, x.data(), n, out.data(), rows, 0, rows);
    for (size_t i = 0; i < ref.size(); ++i) {
      EXPECT_NEAR(out[i], ref[i], 1e-4 * (std::fabs(ref[i]) + 1)) << fmt.name << " i=" << i;
    }
  }
  EXPECT_FALSE(QuantUsesA8(GroupFormat(8, 16)));  // group 16 stays on the float path
  EXPECT_FALSE(QuantUsesA8(Int8RowFormat(true)));  // W8A8 keeps its per-token definition
}

using GemmFn = void (*)(const PackedWeight&, const float*, int64_t, float*, int64_t, int64_t,
                        int64_t);

// A token's outputs must not depend on the batch it is in, nor on the rows computed with it.
// Both A8 kernels: the 8-bit formats here and the 4-bit (W4A8) group formats.
TEST(Quant8A8Test, BatchAndRowRangeInvariance) {
  if (!HasVnni()) GTEST_SKIP() << "CPU lacks AVX-512 VNNI";
  std::mt19937 rng(14);
  const int64_t rows = 23, cols = 448;
  std::vector<std::pair<Fmt, GemmFn>> cases;
  for (const Fmt& fmt : kFmts) cases.push_back({fmt, &GemmQuant8A8Avx512});
  for (int g : {32, 64, 128, 256}) {
    cases.push_back({{"int4-g" + std::to_string(g), -g}, &GemmQuant4A8Avx512});
  }
  for (const auto& [fmt, kernel] : cases) {
    const auto w = Normal(rows * cols, 0.05f, rng);
    PackedQuant p = fmt.group < 0 ? PackGroup(w.data(), rows, cols, 4, -fmt.group)
                                  : Pack(fmt, w, rows, cols);
    const int64_t max_n = 17;
    const auto x = Normal(max_n * cols, 1.0f, rng);
    // Each token alone, all rows: the baseline.
    std::vector<float> alone(static_cast<size_t>(max_n * rows));
    for (int64_t t = 0; t < max_n; ++t) {
      kernel(p.view, x.data() + t * cols, 1, alone.data() + t * rows, rows, 0, rows);
    }
    // Every batch size 1..17 starting at token 0.
    for (int64_t n = 1; n <= max_n; ++n) {
      std::vector<float> y(static_cast<size_t>(n * rows));
      kernel(p.view, x.data(), n, y.data(), rows, 0, rows);
      for (int64_t t = 0; t < n; ++t)
        for (int64_t r = 0; r < rows; ++r)
          ASSERT_EQ(y[t * rows + r], alone[t * rows + r])
              << fmt.name << " batch n=" << n << " t=" << t << " r=" << r;
    }
    // Row ranges: every split point into two calls, and a few odd sub-ranges, for decode
    // and for a batch.
    for (int64_t n : {int64_t{1}, int64_t{9}}) {
      for (int64_t split = 1; split < rows; ++split) {
        std::vector<float> y(static_cast<size_t>(n * rows), -7.0f);
        kernel(p.view, x.data(), n, y.data(), rows, 0, split);
        kernel(p.view, x.data(), n, y.data(), rows, split, rows);
        for (int64_t t = 0; t < n; ++t)
          for (int64_t r = 0; r < rows; ++r)
            ASSERT_EQ(y[t * rows + r], alone[t * rows + r])
                << fmt.name << " split=" << split << " n=" << n << " t=" << t << " r=" << r;
      }
      for (auto [b, e] : {std::pair<int64_t, int64_t>{3, 4}, {5, 11}, {1, 22}, {7, 23}}) {
        std::vector<float> y(static_cast<size_t>(n * rows), -7.0f);
        kernel(p.view, x.data(), n, y.data(), rows, b, e);
        for (int64_t t = 0; t < n; ++t) {
          for (int64_t r = 0; r < rows; ++r) {
            const float want = r >= b && r < e ? alone[t * rows + r] : -7.0f;
            ASSERT_EQ(y[t * rows + r], want) << fmt.name << " range " << b << ".." << e;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace compressd::kernels
