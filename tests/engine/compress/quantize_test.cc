// Calibrated quantizers: on correlated inputs, GPTQ lowers the layer-wise output error
// tr(E H E^T) below round-to-nearest, and QuantEase (started from GPTQ) never raises it.
// Activation statistics match a direct computation.
#include "engine/compress/quantize.h"

#include <gtest/gtest.h>

#include <random>

namespace compressd {
namespace {

struct Problem {
  std::vector<float> w;
  ActivationStats stats;
};

Problem MakeProblem(int64_t rows, int64_t cols, int64_t samples) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0, 1);
  Problem p;
  p.w.resize(static_cast<size_t>(rows * cols));
  for (auto& v : p.w) v = 0.05f * nd(rng);
  // Correlated inputs with a few large channels (as in real activations).
  std::vector<float> x(static_cast<size_t>(samples * cols));
  for (int64_t t = 0; t < samples; ++t) {
    const float common = nd(rng);
    for (int64_t c = 0; c < cols; ++c) {
      x[t * cols + c] = nd(rng) + 0.7f * common + (c % 37 == 0 ? 5.0f * nd(rng) : 0.0f);
    }
  }
  p.stats.cols = cols;
  p.stats.Accumulate(x.data(), samples, true);
  return p;
}

double ErrorOf(const std::string& fmt, const Problem& p, int64_t rows, int64_t cols) {
  auto f = ParseQuantFormat(fmt);
  EXPECT_TRUE(f.ok()) << f.status();
  auto l = QuantizeMatrix("t", p.w, rows, cols, *f, &p.stats, QuantizeOptions{});
  EXPECT_TRUE(l.ok()) << l.status();
  return LayerError(*l, p.w, &p.stats);
}

TEST(QuantizeTest, CalibratedBeatsRoundToNearest) {
  const int64_t rows = 48, cols = 160;
  Problem p = MakeProblem(rows, cols, 1024);
  for (const char* base : {"int4-g64", "int3-g64", "int2-g32"}) {
    const double rtn = ErrorOf(base, p, rows, cols);
    const double gptq = ErrorOf(std::string(base) + "+gptq", p, rows, cols);
    const double qe = ErrorOf(std::string(base) + "+quantease", p, rows, cols);
    // GPTQ usually beats RTN (not guaranteed at 2 bits); QuantEase starts from the better
    // of the two per row and its sweeps never increase the objective.
    if (std::string(base) != "int2-g32") {
      EXPECT_LT(gptq, rtn) << base;
    }
    EXPECT_LE(qe, std::min(gptq, rtn) * 1.0001) << base;
    std::printf("%s: rtn %.5f gptq %.5f quantease %.5f\n", base, rtn, gptq, qe);
  }
}

TEST(QuantizeTest, StatsMatchDirectSums) {
  ActivationStats s;
  s.cols = 3;
  const float x[6] = {1, 2, 3, -1, 0.5f, 2};
  s.Accumulate(x, 2, true);
  EXPECT_EQ(s.n_samples, 2);
  EXPECT_DOUBLE_EQ(s.col_sq_sum[0], 2.0);
  EXPECT_DOUBLE_EQ(s.col_sq_sum[1], 4.25);
  EXPECT_NEAR(s.xtx[0 * 3 + 1], 1 * 2 + (-1) * 0.5, 1e-6);
  EXPECT_NEAR(s.xtx[2 * 3 + 0], 3 - 2, 1e-6);
  EXPECT_FLOAT_EQ(s.col_abs_max[2], 3.0f);
}

TEST(QuantizeTest, FormatNames) {
  EXPECT_EQ(ParseQuantFormat("int4")->name, "int4-g128");
  EXPECT_EQ(ParseQuantFormat("int3-g32+quantease")->name, "int3-g32+quantease");
  EXPECT_FALSE(ParseQuantFormat("int8+gptq").ok());
  EXPECT_FALSE(ParseQuantFormat("int4-g48").ok());
  EXPECT_EQ(ParseQuantFormat("llm-int8-t4")->outlier_threshold, 4.0f);
}

TEST(QuantizeTest, MixedRowsBySalience) {
  const int64_t rows = 16, cols = 128;
  Problem p = MakeProblem(rows, cols, 64);
  for (int64_t c = 0; c < cols; ++c) p.w[3 * cols + c] *= 20;  // row 3 dominates
  auto f = ParseQuantFormat("mixllm-5");
  auto l = QuantizeMatrix("t", p.w, rows, cols, *f, &p.stats, QuantizeOptions{});
  ASSERT_TRUE(l.ok());
  const auto* bits = static_cast<const uint8_t*>(l->w.aux[2]);
  EXPECT_EQ(bits[3], 8);
}

}  // namespace
}  // namespace compressd
