// The W4A8 kernel's superblock code order (kLayoutA8Superblock, quant.h): the permutation
// round-trips, DequantizeRows reads both orders alike, the kernel on superblock codes matches
// the A8 definition (GemmQuantA8Ref) on every group size and on rows with and without a
// canonical tail, keeps batch and row-range invariance, shares activations only with
// weights in the same order, and every other path falls back to the reference.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/gemm.h"
#include "kernels/quant.h"

namespace compressd::kernels {
namespace {

bool HasVnni() {
  const CpuFeatures& f = GetCpuFeatures();
  return f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512vnni;
}

std::vector<float> Normal(int64_t n, float sd, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, sd);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = nd(rng);
  return v;
}

// A copy of p with its codes in superblock order.
struct SbCopy {
  std::vector<uint8_t> codes;
  PackedWeight view;
};
SbCopy ToSuperblocks(const PackedQuant& p) {
  SbCopy s;
  const int64_t cp = QuantPaddedCols(p.view.format, p.view.cols);
  s.codes.resize(p.view.data_bytes);
  PermuteQuant4Superblocks(static_cast<const uint8_t*>(p.view.data), s.codes.data(), 0,
                           p.view.rows, cp, /*to_superblocks=*/true);
  s.view = p.view;
  s.view.data = s.codes.data();
  s.view.format.layout = kLayoutA8Superblock;
  return s;
}

// {rows, cols}: no full span (192), one span and a half-block tail (600), spans only (1024,
// 1536), spans and a 64-column tail (2112).
const std::pair<int64_t, int64_t> kShapes[] = {{7, 192}, {9, 600}, {5, 1024}, {6, 1536}, {4, 2112}};

TEST(QuantSuperblockTest, PermutationRoundTripsAndDequantizesAlike) {
  std::mt19937 rng(31);
  for (int g : {32, 64, 128, 512}) {
    for (auto [rows, cols] : kShapes) {
      const auto w = Normal(rows * cols, 0.05f, rng);
      PackedQuant p = PackGroup(w.data(), rows, cols, 4, g);
      const int64_t cp = QuantPaddedCols(p.view.format, cols);
      SbCopy s = ToSuperblocks(p);
      const auto* orig = static_cast<const uint8_t*>(p.view.data);
      if (cp >= kA8Superblock) {
        EXPECT_NE(0, std::memcmp(s.codes.data(), orig, s.codes.size())) << "nothing moved";
        // Word k of chunk l of the first span is at 64 k + 4 l.
        for (int l = 0; l < 16; ++l)
          for (int k = 0; k < 4; ++k)
            ASSERT_EQ(0, std::memcmp(s.codes.data() + 64 * k + 4 * l, orig + 16 * l + 4 * k, 4));
      }
      std::vector<uint8_t> back(s.codes);
      PermuteQuant4Superblocks(back.data(), back.data(), 0, rows, cp, false);  // in place
      ASSERT_EQ(0, std::memcmp(back.data(), orig, back.size())) << "g=" << g << " cols=" << cols;
      std::vector<float> a(static_cast<size_t>(rows * cols)), b(a.size());
      DequantizeRows(p.view, 0, rows, a.data());
      DequantizeRows(s.view, 0, rows, b.data());
      ASSERT_EQ(a, b) << "g=" << g << " cols=" << cols;
    }
  }
}

TEST(QuantSuperblockTest, KernelMatchesTheA8Definition) {
  if (!HasVnni()) GTEST_SKIP() << "CPU lacks AVX-512 VNNI";
  std::mt19937 rng(32);
  for (int g : {32, 64, 128, 512}) {
    for (auto [rows, cols] : kShapes) {
      const auto w = Normal(rows * cols, 0.05f, rng);
      PackedQuant p = PackGroup(w.data(), rows, cols, 4, g);
      SbCopy s = ToSuperblocks(p);
      std::vector<float> deq(static_cast<size_t>(rows * cols));
      DequantizeRows(p.view, 0, rows, deq.data());
      for (int64_t n : {1, 2, 7, 16, 65}) {
        const auto x = Normal(n * cols, 1.0f, rng);
        std::vector<float> ref(static_cast<size_t>(n * rows)), out(ref.size());
        GemmQuantA8Ref(p.view, x.data(), n, ref.data(), rows, 0, rows);
        GemmQuant4A8Avx512(s.view, x.data(), n, out.data(), rows, 0, rows);
        for (int64_t t = 0; t < n; ++t) {
          for (int64_t r = 0; r < rows; ++r) {
            double mag = 0;
            for (int64_t c = 0; c < cols; ++c) mag += std::fabs(deq[r * cols + c] * x[t * cols + c]);
            ASSERT_NEAR(out[t * rows + r], ref[t * rows + r], 1e-5 * mag + 1e-6)
                << "g=" << g << " " << rows << "x" << cols << " n=" << n << " t=" << t
                << " r=" << r;
          }
        }
      }
    }
  }
}

// A token's outputs do not depend on its batch nor on the rows computed with it.
TEST(QuantSuperblockTest, BatchAndRowRangeInvariance) {
  if (!HasVnni()) GTEST_SKIP() << "CPU lacks AVX-512 VNNI";
  std::mt19937 rng(33);
  const int64_t rows = 23, cols = 1088;  // two spans and a 64-column tail
  for (int g : {32, 128}) {
    const auto w = Normal(rows * cols, 0.05f, rng);
    PackedQuant p = PackGroup(w.data(), rows, cols, 4, g);
    SbCopy s = ToSuperblocks(p);
    const int64_t max_n = 17;
    const auto x = Normal(max_n * cols, 1.0f, rng);
    std::vector<float> alone(static_cast<size_t>(max_n * rows));
    for (int64_t t = 0; t < max_n; ++t) {
      GemmQuant4A8Avx512(s.view, x.data() + t * cols, 1, alone.data() + t * rows, rows, 0, rows);
    }
    for (int64_t n = 1; n <= max_n; ++n) {
      std::vector<float> y(static_cast<size_t>(n * rows));
      GemmQuant4A8Avx512(s.view, x.data(), n, y.data(), rows, 0, rows);
      for (int64_t t = 0; t < n; ++t)
        for (int64_t r = 0; r < rows; ++r)
          ASSERT_EQ(y[t * rows + r], alone[t * rows + r]) << "g=" << g << " n=" << n;
    }
    for (int64_t n : {int64_t{1}, int64_t{9}}) {
      for (int64_t split = 1; split < rows; ++split) {
        std::vector<float> y(static_cast<size_t>(n * rows), -7.0f);
        GemmQuant4A8Avx512(s.view, x.data(), n, y.data(), rows, 0, split);
        GemmQuant4A8Avx512(s.view, x.data(), n, y.data(), rows, split, rows);
        for (int64_t t = 0; t < n; ++t)
          for (int64_t r = 0; r < rows; ++r)
            ASSERT_EQ(y[t * rows + r], alone[t * rows + r]) << "split=" << split << " n=" << n;
      }
    }
  }
}

// Activations prepared for superblock weights serve every weight in that order (exactly
// the per-call result); a cache prepared for canonical weights is not used for them, nor the
// other way round.
TEST(QuantSuperblockTest, SharedActivationsFollowTheLayout) {
  if (!HasVnni()) GTEST_SKIP() << "CPU lacks AVX-512 VNNI";
  std::mt19937 rng(34);
  const int64_t rows = 20, cols = 2112;
  const auto w1 = Normal(rows * cols, 0.05f, rng), w2 = Normal((rows + 4) * cols, 0.05f, rng);
  PackedQuant p1 = PackGroup(w1.data(), rows, cols, 4, 64);
  PackedQuant p2 = PackGroup(w2.data(), rows + 4, cols, 4, 64);
  SbCopy s1 = ToSuperblocks(p1), s2 = ToSuperblocks(p2);
  for (int64_t n : {1, 3, 70}) {
    const auto x = Normal(n * cols, 1.0f, rng);
    ActCache sb, canon;
    ASSERT_TRUE(ActCacheReserve(s1.view, x.data(), n, &sb));
    ActCacheFill(0, n / 3, &sb);
    ActCacheFill(n / 3, n, &sb);
    ASSERT_TRUE(ActCacheReserve(p1.view, x.data(), n, &canon));
    ActCacheFill(0, n, &canon);
    EXPECT_NE(sb.kind, canon.kind);
    for (const PackedWeight* v : {&s1.view, &s2.view, &p1.view, &p2.view}) {
      const int64_t r = v->rows;
      std::vector<float> want(static_cast<size_t>(n * r)), a(want.size()), b(want.size());
      Gemm(*v, x.data(), n, want.data(), r, 0, r);
      Gemm(*v, x.data(), n, a.data(), r, 0, r / 2, &sb);
      Gemm(*v, x.data(), n, a.data(), r, r / 2, r, &sb);
      Gemm(*v, x.data(), n, b.data(), r, 0, r, &canon);
      ASSERT_EQ(a, want) << "n=" << n << " rows=" << r;
      ASSERT_EQ(b, want) << "n=" << n << " rows=" << r;
    }
  }
}

// Below AVX-512 VNNI (here: the ISA capped to AVX2, or the scalar path) no kernel reads the
// superblock order: Gemm() runs such a weight through the reference, whose result is the
// canonical weight's reference result.
TEST(QuantSuperblockTest, OtherPathsFallBackToTheReference) {
  std::mt19937 rng(35);
  const int64_t rows = 9, cols = 600;
  const auto w = Normal(rows * cols, 0.05f, rng);
  PackedQuant p = PackGroup(w.data(), rows, cols, 4, 128);
  SbCopy s = ToSuperblocks(p);
  const int64_t n = 3;
  const auto x = Normal(n * cols, 1.0f, rng);
  std::vector<float> ref(static_cast<size_t>(n * rows)), got(ref.size());
  GemmQuantRef(p.view, x.data(), n, ref.data(), rows, 0, rows);
  for (CpuIsa cap : {CpuIsa::kAvx2, CpuIsa::kScalar}) {
    SetIsaCap(cap);
    EXPECT_FALSE(GemmUsesQuant4A8(s.view.format));
    Gemm(s.view, x.data(), n, got.data(), rows, 0, rows);
    SetIsaCap(CpuIsa::kAvx512);
    ASSERT_EQ(got, ref) << IsaName(cap);
  }
}

}  // namespace
}  // namespace compressd::kernels
