// DFloat11-style lossless bf16 (kernels/dfloat11.h): encode -> decode is bit-identical (every
// bf16 pattern class, skewed exponent histograms that need the length limit, one-exponent
// tensors), the table decoder equals the scalar reference, Gemm() on df11 equals Gemm() on
// the same values stored as dense bf16 bit for bit on every ISA (hence batch and row-range
// invariant), and ValidateDf11 rejects malformed buffers.
#include "kernels/dfloat11.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/format_ops.h"
#include "kernels/gemm.h"
#include "kernels/types.h"

namespace compressd::kernels {
namespace {

// Trained-like weights: N(0, sigma) rounded to bf16.
std::vector<uint16_t> Gaussian(int64_t count, float sigma, std::mt19937& rng) {
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<uint16_t> w(static_cast<size_t>(count));
  for (auto& v : w) v = F32ToBF16(d(rng));
  return w;
}

std::vector<uint16_t> RandomBits(int64_t count, std::mt19937& rng) {
  std::vector<uint16_t> w(static_cast<size_t>(count));
  for (auto& v : w) v = static_cast<uint16_t>(rng());
  return w;
}

// Every class of bf16 value: +-0, subnormals, normals, +-inf, quiet/signalling NaNs.
std::vector<uint16_t> Specials(int64_t count, std::mt19937& rng) {
  const uint16_t kVals[] = {0x0000, 0x8000, 0x0001, 0x807f, 0x0040, 0x3f80, 0xbf80, 0x7f7f,
                            0xff7f, 0x0080, 0x7f80, 0xff80, 0x7fc0, 0xffc1, 0x7f81, 0x7fff};
  std::vector<uint16_t> w(static_cast<size_t>(count));
  for (auto& v : w) v = kVals[rng() % 16];
  return w;
}

// Exponent e with probability ~2^-(e+1): unlimited Huffman lengths would grow past the limit.
std::vector<uint16_t> Geometric(int64_t count, std::mt19937& rng) {
  std::vector<uint16_t> w(static_cast<size_t>(count));
  for (auto& v : w) {
    int e = 0;
    while (e < 254 && (rng() & 1)) ++e;
    v = static_cast<uint16_t>((rng() & 0x807f) | (e << 7));
  }
  return w;
}

std::vector<uint16_t> SameExponent(int64_t count, std::mt19937& rng) {
  std::vector<uint16_t> w(static_cast<size_t>(count));
  for (auto& v : w) v = static_cast<uint16_t>((rng() & 0x807f) | (0x7c << 7));
  return w;
}

void ExpectRoundTrip(const std::vector<uint16_t>& w, int64_t rows, int64_t cols, const char* what) {
  const Df11Packed p = PackDf11(w.data(), rows, cols);
  const PackedWeight v = p.View();
  ASSERT_EQ(ValidateDf11(v), "") << what;
  for (int s = 0; s < 256; ++s) ASSERT_LE(p.lengths[s], kDf11MaxCodeLen) << what;
  std::vector<uint16_t> ref(w.size()), fast(w.size());
  Df11DecodeRowsRef(v, 0, rows, ref.data());
  Df11DecodeRows(v, 0, rows, fast.data());
  for (size_t i = 0; i < w.size(); ++i) {
    ASSERT_EQ(ref[i], w[i]) << what << " ref at " << i;
    ASSERT_EQ(fast[i], w[i]) << what << " fast at " << i;
  }
  // Row sub-ranges decode the same bits (rows are independent chunks).
  if (rows > 3) {
    std::vector<uint16_t> part(static_cast<size_t>((rows - 3) * cols));
    Df11DecodeRows(v, 2, rows - 1, part.data());
    for (size_t i = 0; i < part.size(); ++i) ASSERT_EQ(part[i], w[2 * cols + i]) << what;
  }
  // DequantizeRows (the FormatOps definition) gives the bf16 values as fp32.
  std::vector<float> f(w.size());
  DequantizeRows(v, 0, rows, f.data());
  for (size_t i = 0; i < w.size(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, &f[i], 4);
    ASSERT_EQ(bits, static_cast<uint32_t>(w[i]) << 16) << what << " dequant at " << i;
  }
}

TEST(Df11, RoundTripIsBitIdentical) {
  std::mt19937 rng(1);
  struct Shape {
    int64_t rows, cols;
  };
  for (Shape s : {Shape{1, 1}, Shape{1, 7}, Shape{3, 5}, Shape{5, 33}, Shape{17, 300},
                  Shape{9, 1030}, Shape{6, 2100}}) {
    const int64_t c = s.rows * s.cols;
    ExpectRoundTrip(Gaussian(c, 0.02f, rng), s.rows, s.cols, "gaussian");
    ExpectRoundTrip(RandomBits(c, rng), s.rows, s.cols, "random bits");
    ExpectRoundTrip(Specials(c, rng), s.rows, s.cols, "specials");
    ExpectRoundTrip(Geometric(c, rng), s.rows, s.cols, "geometric exponents");
    ExpectRoundTrip(SameExponent(c, rng), s.rows, s.cols, "one exponent");
    ExpectRoundTrip(std::vector<uint16_t>(static_cast<size_t>(c), 0), s.rows, s.cols, "zeros");
  }
}

TEST(Df11, LengthLimitAndSize) {
  std::mt19937 rng(2);
  // Many rows of a geometric histogram: an unlimited Huffman code would go far past the limit.
  const std::vector<uint16_t> g = Geometric(64 * 1024, rng);
  const Df11Packed p = PackDf11(g.data(), 64, 1024);
  int maxlen = 0;
  for (uint8_t l : p.lengths) maxlen = std::max<int>(maxlen, l);
  EXPECT_LE(maxlen, kDf11MaxCodeLen);
  EXPECT_GE(maxlen, 8);  // 200+ symbols in use
  // Trained-like weights: a few bits of exponent per weight, ~11 bits in all.
  const std::vector<uint16_t> w = Gaussian(256 * 1024, 0.02f, rng);
  const Df11Packed q = PackDf11(w.data(), 256, 1024);
  const double h = Df11ExponentEntropy(w.data(), static_cast<int64_t>(w.size()));
  EXPECT_GT(h, 1.5);
  EXPECT_LT(h, 4.0);
  const double bpw = Df11BitsPerWeight(q);
  EXPECT_GT(bpw, 8.0 + h);         // Huffman is never below the entropy
  EXPECT_LT(bpw, 8.0 + h + 0.35);  // and within a fraction of a bit (plus tables)
}

TEST(Df11, F32SourceIsLosslessForItsBf16Rounding) {
  std::mt19937 rng(3);
  std::normal_distribution<float> d(0.0f, 0.05f);
  const int64_t rows = 7, cols = 129;
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (float& v : w) v = d(rng);
  w[0] = -0.0f;
  w[1] = INFINITY;
  w[2] = 1e-40f;  // fp32 subnormal -> bf16 subnormal
  const Df11Packed p = PackDf11F32(w.data(), rows, cols);
  ASSERT_EQ(ValidateDf11(p.View()), "");
  std::vector<uint16_t> out(w.size());
  Df11DecodeRows(p.View(), 0, rows, out.data());
  for (size_t i = 0; i < w.size(); ++i) ASSERT_EQ(out[i], F32ToBF16(w[i])) << i;
}

struct Pair {
  std::vector<uint16_t> bits;
  Df11Packed packed;
  PackedWeight dense;
};

Pair MakePair(int64_t rows, int64_t cols, std::mt19937& rng) {
  Pair p;
  p.bits = Gaussian(rows * cols, 0.05f, rng);
  p.bits[0] = 0x0001;  // a subnormal weight (flushed by vdpbf16ps in both paths)
  p.packed = PackDf11(p.bits.data(), rows, cols);
  p.dense.format.kind = WeightKind::kDense;
  p.dense.format.dtype = DType::kBF16;
  p.dense.rows = rows;
  p.dense.cols = cols;
  p.dense.data = p.bits.data();
  p.dense.data_bytes = p.bits.size() * 2;
  return p;
}

// Gemm(df11) == Gemm(dense bf16) bit for bit on every ISA; both close to the double oracle.
TEST(Df11, GemmEqualsDenseBf16OnEveryIsa) {
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  ASSERT_TRUE(GemmSupports(Df11Format()));
  for (CpuIsa cap : {CpuIsa::kScalar, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
    SetIsaCap(cap);
    for (auto [rows, cols] :
         {std::pair<int64_t, int64_t>{1, 1}, {5, 7}, {19, 33}, {37, 300}, {70, 1030}, {9, 2100}}) {
      Pair p = MakePair(rows, cols, rng);
      const PackedWeight w = p.packed.View();
      for (int64_t n : {1, 2, 3, 4, 5, 9, 67}) {
        std::vector<float> x(static_cast<size_t>(n * cols));
        for (float& v : x) v = u(rng);
        std::vector<float> yd(static_cast<size_t>(n * rows)), yc(yd.size()), yr(yd.size());
        Gemm(p.dense, x.data(), n, yd.data(), rows, 0, rows);
        Gemm(w, x.data(), n, yc.data(), rows, 0, rows);
        GemmDf11Ref(w, x.data(), n, yr.data(), rows, 0, rows);
        for (int64_t t = 0; t < n; ++t) {
          for (int64_t r = 0; r < rows; ++r) {
            const size_t i = static_cast<size_t>(t * rows + r);
            ASSERT_EQ(yc[i], yd[i]) << IsaName(cap) << " " << rows << "x" << cols << " n=" << n;
            double mag = 0;
            for (int64_t c = 0; c < cols; ++c) {
              mag += std::fabs(BF16ToF32(p.bits[r * cols + c]) * x[t * cols + c]);
            }
            ASSERT_NEAR(yc[i], yr[i], 4e-3 * mag + 1e-6) << IsaName(cap) << " n=" << n;
          }
        }
      }
    }
  }
  SetIsaCap(CpuIsa::kAvx512);
}

TEST(Df11, BatchAndRowRangeInvariant) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int64_t rows = 45, cols = 2100, n = 67;
  Pair p = MakePair(rows, cols, rng);
  const PackedWeight w = p.packed.View();
  std::vector<float> x(static_cast<size_t>(n * cols));
  for (float& v : x) v = u(rng);
  std::vector<float> all(static_cast<size_t>(n * rows));
  Gemm(w, x.data(), n, all.data(), rows, 0, rows);
  for (int64_t sub : {1, 2, 3, 4, 5, 9}) {
    std::vector<float> part(static_cast<size_t>(sub * rows));
    Gemm(w, x.data(), sub, part.data(), rows, 0, rows);
    for (int64_t i = 0; i < sub * rows; ++i) ASSERT_EQ(part[i], all[i]) << "n=" << sub;
  }
  // Split across "threads" at ragged boundaries.
  for (int64_t split : {1, 3, 16, 17, 44}) {
    std::vector<float> y(static_cast<size_t>(n * rows));
    Gemm(w, x.data(), n, y.data(), rows, 0, split);
    Gemm(w, x.data(), n, y.data(), rows, split, rows);
    for (size_t i = 0; i < y.size(); ++i) ASSERT_EQ(y[i], all[i]) << "split=" << split;
  }
  for (int64_t t : {int64_t{0}, int64_t{5}, n - 1}) {
    for (int64_t rb : {0, 3, 44}) {
      std::vector<float> one(static_cast<size_t>(rows), 0.0f);
      Gemm(w, x.data() + t * cols, 1, one.data(), rows, rb, rb + 1);
      ASSERT_EQ(one[rb], all[t * rows + rb]) << "t=" << t << " r=" << rb;
    }
  }
}

TEST(Df11, ValidateRejectsMalformedBuffers) {
  std::mt19937 rng(6);
  const int64_t rows = 6, cols = 100;
  const std::vector<uint16_t> bits = Gaussian(rows * cols, 0.02f, rng);
  const Df11Packed good = PackDf11(bits.data(), rows, cols);
  ASSERT_EQ(ValidateDf11(good.View()), "");
  auto expect_bad = [&](const char* what, auto mutate) {
    Df11Packed p = good;
    PackedWeight v = p.View();
    mutate(p, v);
    EXPECT_NE(ValidateDf11(v), "") << what;
  };
  auto set_offset = [](Df11Packed& p, int64_t i, uint64_t val) {
    std::memcpy(p.offsets.data() + 8 * i, &val, 8);
  };
  auto get_offset = [](const Df11Packed& p, int64_t i) {
    uint64_t val;
    std::memcpy(&val, p.offsets.data() + 8 * i, 8);
    return val;
  };
  expect_bad("wrong kind",
             [](Df11Packed&, PackedWeight& v) { v.format.kind = WeightKind::kSparse; });
  expect_bad("short data", [](Df11Packed&, PackedWeight& v) { v.data_bytes -= 1; });
  expect_bad("no data", [](Df11Packed&, PackedWeight& v) { v.data = nullptr; });
  expect_bad("zero rows", [](Df11Packed&, PackedWeight& v) { v.rows = 0; });
  expect_bad("short lengths", [](Df11Packed&, PackedWeight& v) { v.aux_bytes[2] = 255; });
  expect_bad("short offsets", [](Df11Packed&, PackedWeight& v) { v.aux_bytes[1] -= 8; });
  expect_bad("no stream", [](Df11Packed&, PackedWeight& v) { v.aux_bytes[0] = 3; });
  expect_bad("truncated stream", [](Df11Packed&, PackedWeight& v) { v.aux_bytes[0] -= 8; });
  expect_bad("length > max",
             [](Df11Packed& p, PackedWeight&) { p.lengths[200] = kDf11MaxCodeLen + 1; });
  expect_bad("no codes", [](Df11Packed& p, PackedWeight&) {
    std::fill(p.lengths.begin(), p.lengths.end(), 0);
  });
  expect_bad("not a prefix code", [](Df11Packed& p, PackedWeight&) {
    for (int s = 0; s < 4; ++s) p.lengths[s] = 1;
  });
  expect_bad("first offset", [&](Df11Packed& p, PackedWeight&) { set_offset(p, 0, 1); });
  expect_bad("row end off by one",
             [&](Df11Packed& p, PackedWeight&) { set_offset(p, 1, get_offset(p, 1) + 1); });
  expect_bad("decreasing",
             [&](Df11Packed& p, PackedWeight&) { set_offset(p, 2, get_offset(p, 1) - 1); });
  expect_bad("past the end", [&](Df11Packed& p, PackedWeight&) {
    set_offset(p, rows, get_offset(p, rows) + 1000);
  });
  expect_bad("incomplete code hit", [&](Df11Packed& p, PackedWeight&) {
    // Drop the code of the most frequent exponent: its windows decode to nothing.
    int best = 0;
    for (int s = 0; s < 256; ++s) {
      if (p.lengths[s] && (p.lengths[best] == 0 || p.lengths[s] < p.lengths[best])) best = s;
    }
    p.lengths[best] = 0;
  });
}

}  // namespace
}  // namespace compressd::kernels
