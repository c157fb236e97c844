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
        // 4-/8-bit group codes and per-row int8 on AVX-512 VNNI: the A8 paths, whose
        // definition is GemmQuantA8Ref (checked against the fp32 product in
        // W4A8RefWithinActivationRoundingBound and quant_8a8_test.cc).
        std::vector<float> ref_a8;
        const WeightFormat& pf = p.view.format;
        const auto pv = static_cast<QuantVariant>(pf.variant);
        if (pv == QuantVariant::kGroup && pf.group_size >= 32) {  // every group width
          ref_a8.assign(ref.size(), -7.0f);
          GemmQuantA8Ref(p.view, x.data(), n, ref_a8.data(), ldy, 0, rows);
        }
        // Per-row int8 on AVX-512 VNNI: the A16 path (definition GemmQuant8A16Ref).
        if (pv == QuantVariant::kInt8Row) {
          ref_a8.assign(ref.size(), -7.0f);
          GemmQuant8A16Ref(p.view, x.data(), n, ref_a8.data(), ldy, 0, rows);
        }
        for (auto& [pname, fn] : paths) {
          const bool a8_path =
              !ref_a8.empty() &&
              (pname == "avx512" || (pname == "dispatch" && (QuantUsesA8(p.view.format) ||
                                                             QuantUsesA16(p.view.format))));
          const std::vector<float>& want = a8_path ? ref_a8 : ref;
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
              ASSERT_NEAR(out[i], want[i], 1e-4 * (scale + 1)) << c.name << " " << pname << " "
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

// The W4A8 definition against the fp32 product: the only difference is the rounding of each
// activation to its chunk's int8 grid, at most s/2 per column, so
// |y_a8 - y| <= sum_c |w_c| * s_chunk(c) / 2 (plus float rounding of the sums).
TEST(QuantTest, W4A8RefWithinActivationRoundingBound) {
  std::mt19937 rng(8);
  for (int g : {32, 64, 128, 256}) {
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{11, 172}, {8, 2048}, {5, 33}}) {
      const auto w = RandomMatrix(rows, cols, rng);
      PackedQuant p = PackGroup(w.data(), rows, cols, 4, g);
      const int64_t n = 3, cp = QuantPaddedCols(p.view.format, cols);
      std::normal_distribution<float> nd(0.0f, 1.0f);
      std::vector<float> x(static_cast<size_t>(n * cols));
      for (auto& v : x) v = nd(rng);
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
        for (int64_t c = 0; c < cols; ++c) {
          ASSERT_LE(std::fabs(q[c] * s[c / 32] - x[t * cols + c]), 0.5f * s[c / 32] * 1.0001f)
              << "c=" << c;
        }
        for (int64_t r = 0; r < rows; ++r) {
          double bound = 0, mag = 0;
          for (int64_t c = 0; c < cols; ++c) {
            bound += std::fabs(deq[r * cols + c]) * s[c / 32] * 0.5;
            mag += std::fabs(deq[r * cols + c] * x[t * cols + c]);
          }
          const double err = std::fabs(double(a8[t * rows + r]) - exact[t * rows + r]);
          EXPECT_LE(err, bound + 1e-6 * mag) << "g=" << g << " " << rows << "x" << cols;
          worst = std::max(worst, err / bound);
        }
      }
      // Rounding errors of independent columns partly cancel: far below the worst case,
      // but not zero (the activations really are quantized).
      EXPECT_GT(worst, 1e-4) << "g=" << g << " cols=" << cols;
    }
  }
}

// Every 4-bit group size and ragged column count through the W4A8 kernel, including the
// half block at the end of rows whose padded length is not a multiple of 128.
TEST(QuantTest, W4A8KernelMatchesItsReference) {
  const CpuFeatures& f = GetCpuFeatures();
  if (!(f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512vnni)) {
    GTEST_SKIP() << "CPU lacks AVX-512 VNNI";
  }
  std::mt19937 rng(9);
  for (int g : {32, 64, 128, 512}) {
    for (auto [rows, cols] :
         {std::pair<int64_t, int64_t>{7, 64}, {6, 192}, {9, 600}, {4, 2048 + 64}}) {
      const auto w = RandomMatrix(rows, cols, rng);
      PackedQuant p = PackGroup(w.data(), rows, cols, 4, g);
      for (int64_t n : {1, 2, 8, 11, 16, 65}) {
        std::normal_distribution<float> nd(0.0f, 1.0f);
        std::vector<float> x(static_cast<size_t>(n * cols));
        for (auto& v : x) v = nd(rng);
        std::vector<float> ref(static_cast<size_t>(n * rows)), out = ref;
        GemmQuantA8Ref(p.view, x.data(), n, ref.data(), rows, 0, rows);
        GemmQuant4A8Avx512(p.view, x.data(), n, out.data(), rows, 0, rows);
        for (int64_t t = 0; t < n; ++t) {
          for (int64_t r = 0; r < rows; ++r) {
            double mag = 0;
            std::vector<float> row(static_cast<size_t>(cols));
            DequantizeRows(p.view, r, r + 1, row.data());
            for (int64_t c = 0; c < cols; ++c) mag += std::fabs(row[c] * x[t * cols + c]);
            ASSERT_NEAR(out[t * rows + r], ref[t * rows + r], 1e-5 * mag + 1e-6)
                << "g=" << g << " " << rows << "x" << cols << " n=" << n << " t=" << t
                << " r=" << r;
          }
        }
      }
    }
  }
}

// Activations quantized once (ActCache) and shared by several linears and row ranges give
// exactly the outputs of Gemm() without the cache; a cache built for another input, token
// count or layout is not used (the kernel quantizes x itself), and formats without shareable
// activations reserve nothing.
TEST(QuantTest, SharedActivationsMatchPerCallQuantization) {
  std::mt19937 rng(12);
  ActCache cache;
  // {bits, group}: W4A8 groups, W8A8-chunk groups (8-, 3-, 2-bit), and {8, 0}: per-row int8
  // (A16).
  for (auto [bits, g] : {std::pair<int, int>{4, 32}, {4, 64}, {4, 128}, {8, 0}, {8, 128},
                         {3, 64}, {2, 32}}) {
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{12, 64}, {9, 600}, {20, 2048 + 64}}) {
      const auto w1 = RandomMatrix(rows, cols, rng), w2 = RandomMatrix(rows + 4, cols, rng);
      PackedQuant p1 = g > 0 ? PackGroup(w1.data(), rows, cols, bits, g)
                             : PackInt8Rows(w1.data(), rows, cols, false);
      PackedQuant p2 = g > 0 ? PackGroup(w2.data(), rows + 4, cols, bits, g)
                             : PackInt8Rows(w2.data(), rows + 4, cols, false);
      for (int64_t n : {1, 3, 16, 70}) {  // 70: more than one token block of the kernel
        std::normal_distribution<float> nd(0.0f, 1.0f);
        std::vector<float> x(static_cast<size_t>(n * cols));
        for (auto& v : x) v = nd(rng);
        const bool shareable = ActCacheReserve(p1.view, x.data(), n, &cache);
        EXPECT_EQ(shareable, GemmUsesQuant4A8(p1.view.format) || QuantUsesA16(p1.view.format) ||
                                 GemmUsesQuant8A8(p1.view.format));
        // Filled in two uneven token ranges, as the engine's threads do.
        ActCacheFill(0, n / 3, &cache);
        ActCacheFill(n / 3, n, &cache);
        for (const PackedQuant* p : {&p1, &p2}) {
          const int64_t r = p->view.rows;
          std::vector<float> want(static_cast<size_t>(n * r)), got(want.size(), -1.0f);
          Gemm(p->view, x.data(), n, want.data(), r, 0, r);
          Gemm(p->view, x.data(), n, got.data(), r, 0, r / 2 / 4 * 4, &cache);
          Gemm(p->view, x.data(), n, got.data(), r, r / 2 / 4 * 4, r, &cache);
          for (size_t i = 0; i < want.size(); ++i) {
            ASSERT_EQ(got[i], want[i]) << "bits=" << bits << " g=" << g << " " << r << "x" << cols << " n=" << n
                                       << " i=" << i;
          }
        }
        if (!shareable) continue;
        // Another input at another address: the cache must not be used for it.
        std::vector<float> x2(x.size());
        for (auto& v : x2) v = nd(rng);
        std::vector<float> want(static_cast<size_t>(n * rows)), got(want.size());
        Gemm(p1.view, x2.data(), n, want.data(), rows, 0, rows);
        Gemm(p1.view, x2.data(), n, got.data(), rows, 0, rows, &cache);
        ASSERT_EQ(got, want) << "cache used for another x";
        // The same x with more tokens than the cache holds: not used either.
        // (The buffers first hold x2, so a misused cache would read x2's tokens.)
        if (n > 1) {
          ASSERT_TRUE(ActCacheReserve(p1.view, x2.data(), n, &cache));
          ActCacheFill(0, n, &cache);
          ASSERT_TRUE(ActCacheReserve(p1.view, x.data(), 1, &cache));
          ActCacheFill(0, 1, &cache);
          Gemm(p1.view, x.data(), n, got.data(), rows, 0, rows, &cache);
          Gemm(p1.view, x.data(), n, want.data(), rows, 0, rows);
          ASSERT_EQ(got, want) << "cache of 1 token used for " << n;
        }
        cache.Clear();
      }
    }
  }
  // A different group size reads a different layout: a cache built for group 32 is not used
  // by a group-128 weight over the same x.
  const int64_t rows = 8, cols = 256, n = 4;
  const auto w = RandomMatrix(rows, cols, rng);
  PackedQuant g32 = PackGroup(w.data(), rows, cols, 4, 32);
  PackedQuant g128 = PackGroup(w.data(), rows, cols, 4, 128);
  std::vector<float> x(static_cast<size_t>(n * cols));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& v : x) v = nd(rng);
  if (ActCacheReserve(g32.view, x.data(), n, &cache)) {
    ActCacheFill(0, n, &cache);
    std::vector<float> want(static_cast<size_t>(n * rows)), got(want.size());
    Gemm(g128.view, x.data(), n, want.data(), rows, 0, rows);
    Gemm(g128.view, x.data(), n, got.data(), rows, 0, rows, &cache);
    EXPECT_EQ(got, want);
  }
  // A cache of one kernel's layout (W4A8, A16, W8A8-chunk) is not read by another over the
  // same x; SpQR (float path) has no shared activations.
  PackedQuant i8 = PackInt8Rows(w.data(), rows, cols, false);
  PackedQuant i3 = PackGroup(w.data(), rows, cols, 3, 64);
  PackedQuant i3g32 = PackGroup(w.data(), rows, cols, 3, 32);  // another group-sum layout
  for (const auto& [built, used] : {std::pair<const PackedQuant*, const PackedQuant*>{&g32, &i8},
                                    {&i8, &g32}, {&g32, &i3}, {&i3, &g32}, {&i3, &i8},
                                    {&i3, &i3g32}}) {
    if (!ActCacheReserve(built->view, x.data(), n, &cache)) continue;
    ActCacheFill(0, n, &cache);
    std::vector<float> want(static_cast<size_t>(n * rows)), got(want.size());
    Gemm(used->view, x.data(), n, want.data(), rows, 0, rows);
    Gemm(used->view, x.data(), n, got.data(), rows, 0, rows, &cache);
    EXPECT_EQ(got, want);
  }
  EXPECT_EQ(ActCacheReserve(i8.view, x.data(), n, &cache), QuantUsesA16(i8.view.format));
  EXPECT_EQ(ActCacheReserve(i3.view, x.data(), n, &cache), GemmUsesQuant8A8(i3.view.format));
  PackedQuant spqr = PackSpqr(w.data(), rows, cols, 3, 0.01f);  // float path: nothing shared
  EXPECT_FALSE(ActCacheReserve(spqr.view, x.data(), n, &cache));
  EXPECT_EQ(cache.kind, ActCache::kNone);
}

// The A16 definition against the fp32 product: only the rounding of each activation to its
// block's int16 grid differs, at most s/2 per column, so |y_a16 - y| <= row_scale *
// sum_c |code_c| * s_block(c) / 2 (plus float rounding of the sums).
TEST(QuantTest, W8A16RefWithinActivationRoundingBound) {
  std::mt19937 rng(21);
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{5, 172}, {4, 2048 + 64}}) {
    const auto w = RandomMatrix(rows, cols, rng, 8.0f);
    PackedQuant p = PackInt8Rows(w.data(), rows, cols, false);
    const int64_t n = 3, cp = QuantPaddedCols(p.view.format, cols);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> x(static_cast<size_t>(n * cols));
    for (auto& v : x) v = nd(rng);
    x[7] = 40.0f;  // an outlier: its block's scale is coarser
    std::vector<float> a16(static_cast<size_t>(n * rows)), fp(a16.size());
    GemmQuant8A16Ref(p.view, x.data(), n, a16.data(), rows, 0, rows);
    GemmRef(p.view, x.data(), n, fp.data(), rows, 0, rows);
    const auto* codes = static_cast<const int8_t*>(p.view.data);
    const auto* rs = static_cast<const float*>(p.view.aux[0]);
    double worst = 0;
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t r = 0; r < rows; ++r) {
        double bound = 0, mag = 0;
        for (int64_t b0 = 0; b0 < cols; b0 += kA16Block) {
          const int64_t b1 = std::min(cols, b0 + kA16Block);
          float amax = 0;
          for (int64_t c = b0; c < b1; ++c) amax = std::max(amax, std::fabs(x[t * cols + c]));
          for (int64_t c = b0; c < b1; ++c) {
            bound += std::abs(codes[r * cp + c]) * rs[r] * (amax / 32767.0) / 2;
            mag += std::abs(codes[r * cp + c]) * rs[r] * std::fabs(x[t * cols + c]);
          }
        }
        const double err = std::fabs(double(a16[t * rows + r]) - fp[t * rows + r]);
        EXPECT_LE(err, bound + 1e-5 * mag) << rows << "x" << cols << " t=" << t << " r=" << r;
        worst = std::max(worst, err / (bound + 1e-30));
      }
    }
    EXPECT_GT(worst, 1e-3) << "the bound is far from tight: is the rounding modelled?";
  }
}

// GemmQuant8A16Avx512 against its definition, over ragged shapes, long rows (several
// activation blocks, and rows beyond the decode prefetch's tile size), every tile shape
// and sub-ranges of rows.
TEST(QuantTest, W8A16KernelMatchesItsReference) {
  const CpuFeatures& f = GetCpuFeatures();
  if (!(f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512vnni)) {
    GTEST_SKIP() << "CPU lacks AVX-512 VNNI";
  }
  std::mt19937 rng(22);
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{7, 64}, {9, 600}, {17, 2048 + 32},
                            {9, 8192 + 40}}) {
    const auto w = RandomMatrix(rows, cols, rng, 8.0f);
    PackedQuant p = PackInt8Rows(w.data(), rows, cols, false);
    for (int64_t n : {1, 2, 5, 16, 65}) {
      std::normal_distribution<float> nd(0.0f, 1.0f);
      std::vector<float> x(static_cast<size_t>(n * cols));
      for (auto& v : x) v = nd(rng);
      const int64_t ldy = rows + 1;
      std::vector<float> want(static_cast<size_t>(n * ldy), -7.0f), got = want, part = want;
      GemmQuant8A16Ref(p.view, x.data(), n, want.data(), ldy, 0, rows);
      GemmQuant8A16Avx512(p.view, x.data(), n, got.data(), ldy, 0, rows);
      GemmQuant8A16Avx512(p.view, x.data(), n, part.data(), ldy, 1, rows);
      for (int64_t t = 0; t < n; ++t) {
        for (int64_t r = 0; r < ldy; ++r) {
          const size_t i = t * ldy + r;
          if (r == rows) {
            EXPECT_EQ(got[i], -7.0f);
            continue;
          }
          double mag = 0;
          for (int64_t c = 0; c < cols; ++c) mag += std::fabs(w[r * cols + c] * x[t * cols + c]);
          ASSERT_NEAR(got[i], want[i], 2e-6 * mag + 1e-6)
              << rows << "x" << cols << " n=" << n << " t=" << t << " r=" << r;
          if (r >= 1) {
            EXPECT_EQ(part[i], got[i]) << "row range changed the result";
          }
        }
      }
    }
  }
}

TEST(QuantTest, BatchInvariance) {
  std::mt19937 rng(5);
  // 320 columns: 2.5 W4A8 blocks; 1152: nine (several group windows, longer rows).
  for (const int64_t cols : {int64_t{320}, int64_t{1152}}) {
    const int64_t rows = 37;
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
          ASSERT_EQ(one[r], all[t * rows + r])
              << c.name << " cols=" << cols << " t=" << t << " r=" << r;
        }
      }
    }
  }
}

}  // namespace
}  // namespace compressd::kernels
