// Low-rank factorisation (engine/compress/lowrank.h): the Jacobi eigen-solver, exact
// recovery of a low-rank matrix, rank selection by energy / ratio / explicit rank, and that
// importance weighting lowers the error on the weighted columns.
#include <cmath>
#include <random>
#include <vector>

#include "engine/compress/lowrank.h"
#include "gtest/gtest.h"
#include "kernels/gemm.h"

namespace compressd {
namespace {

TensorView View(const std::vector<float>& w, int64_t rows, int64_t cols) {
  TensorView t;
  t.name = "test.weight";
  t.dtype = DType::kF32;
  t.shape = {rows, cols};
  t.data = w.data();
  t.bytes = w.size() * 4;
  return t;
}

// Dense values of U * V of a low-rank Linear.
std::vector<float> Reconstruct(const Linear& l) {
  const int64_t rows = l.rows(), cols = l.cols(), k = l.w.cols;
  std::vector<float> u(rows * k), v(k * cols), out(rows * cols, 0.0f);
  kernels::DequantizeRows(l.w, 0, rows, u.data());
  kernels::DequantizeRows(l.first->w, 0, k, v.data());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < k; ++j) {
      for (int64_t c = 0; c < cols; ++c) out[r * cols + c] += u[r * k + j] * v[j * cols + c];
    }
  }
  return out;
}

std::vector<float> LowRankMatrix(int64_t rows, int64_t cols, int rank, std::mt19937& rng) {
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> a(rows * rank), b(rank * cols), w(rows * cols, 0.0f);
  for (float& x : a) x = n(rng);
  for (float& x : b) x = n(rng);
  for (int64_t r = 0; r < rows; ++r) {
    for (int j = 0; j < rank; ++j) {
      for (int64_t c = 0; c < cols; ++c) w[r * cols + c] += a[r * rank + j] * b[j * cols + c];
    }
  }
  return w;
}

double RelErr(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num / den);
}

TEST(LowRank, SymmetricEigen) {
  // [[2,1],[1,2]]: eigenvalues 3, 1.
  std::vector<double> vecs;
  const auto vals = SymmetricEigen({2, 1, 1, 2}, 2, &vecs);
  EXPECT_NEAR(vals[0], 3.0, 1e-12);
  EXPECT_NEAR(vals[1], 1.0, 1e-12);
  EXPECT_NEAR(std::fabs(vecs[0]), std::sqrt(0.5), 1e-12);
}

TEST(LowRank, RecoversLowRankMatrixBothOrientations) {
  std::mt19937 rng(1);
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{40, 64}, {64, 40}}) {
    const auto w = LowRankMatrix(rows, cols, 3, rng);
    LowRankParams p;
    p.energy = 0.9999;
    auto l = CompressLowRank(View(w, rows, cols), p, nullptr);
    ASSERT_TRUE(l.ok()) << l.status();
    EXPECT_EQ(l->w.cols, 3) << "energy picks the true rank";
    EXPECT_EQ(l->first->rows(), 3);
    EXPECT_EQ(l->cols(), cols);
    EXPECT_LT(RelErr(Reconstruct(*l), w), 1e-2);  // bf16 factors
  }
}

TEST(LowRank, RankSelection) {
  std::mt19937 rng(2);
  const auto w = LowRankMatrix(32, 96, 20, rng);
  LowRankParams p;
  p.ratio = 0.5;  // floor(0.5 * 32 * 96 / 128) = 12
  EXPECT_EQ(CompressLowRank(View(w, 32, 96), p, nullptr)->w.cols, 12);
  p.rank = 5;
  EXPECT_EQ(CompressLowRank(View(w, 32, 96), p, nullptr)->w.cols, 5);
  p.rank = 0;
  p.factor_bits = 3;
  EXPECT_EQ(CompressLowRank(View(w, 32, 96), p, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(LowRank, WeightedLowersWeightedError) {
  std::mt19937 rng(3);
  std::normal_distribution<float> n(0.0f, 1.0f);
  const int64_t rows = 48, cols = 32;
  std::vector<float> w(rows * cols);
  for (float& x : w) x = n(rng);
  ActivationStats st;
  st.cols = cols;
  st.n_samples = 10;
  st.col_sq_sum.assign(cols, 10.0);
  for (int c = 0; c < 4; ++c) st.col_sq_sum[c] = 10.0 * 400;  // 4 loud input channels
  LowRankParams p;
  p.rank = 8;
  auto werr = [&](const Linear& l) {
    const auto r = Reconstruct(l);
    double e = 0;
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t c = 0; c < cols; ++c) {
        const double d = r[i * cols + c] - w[i * cols + c];
        e += d * d * st.MeanSq(c);
      }
    }
    return e;
  };
  const double plain = werr(*CompressLowRank(View(w, rows, cols), p, &st));
  p.weighted = true;
  const double weighted = werr(*CompressLowRank(View(w, rows, cols), p, &st));
  EXPECT_LT(weighted, 0.7 * plain);
}

TEST(LowRank, QuantizedFactors) {
  std::mt19937 rng(4);
  const auto w = LowRankMatrix(64, 128, 4, rng);
  LowRankParams p;
  p.rank = 4;
  p.factor_bits = 8;
  auto l = CompressLowRank(View(w, 64, 128), p, nullptr);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->w.format.kind, kernels::WeightKind::kQuant);
  EXPECT_LT(RelErr(Reconstruct(*l), w), 3e-2);
}

// Rank known up front and small against the spectrum: the randomized subspace path must be
// near the optimal (Eckart-Young) error, the sum of the discarded eigenvalues of W W^T.
TEST(LowRank, SubspaceIterationNearOptimal) {
  std::mt19937 rng(6);
  std::normal_distribution<float> n(0.0f, 1.0f);
  const int64_t rows = 100, cols = 160;
  auto w = LowRankMatrix(rows, cols, 20, rng);
  for (float& x : w) x += 0.05f * n(rng);
  std::vector<double> g(rows * rows, 0.0);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < rows; ++j) {
      for (int64_t c = 0; c < cols; ++c) g[i * rows + j] += double{w[i * cols + c]} * w[j * cols + c];
    }
  }
  std::vector<double> vecs;
  const auto lam = SymmetricEigen(g, rows, &vecs);
  double optimal = 0;
  for (int64_t i = 20; i < rows; ++i) optimal += lam[i];
  LowRankParams p;
  p.rank = 20;  // 20 + 16 < 0.6 * 100: subspace iteration
  auto l = CompressLowRank(View(w, rows, cols), p, nullptr);
  ASSERT_TRUE(l.ok()) << l.status();
  const auto r = Reconstruct(*l);
  double err = 0;
  for (size_t i = 0; i < w.size(); ++i) err += (r[i] - w[i]) * (r[i] - w[i]);
  EXPECT_LT(err, 1.05 * optimal + 1.0) << "optimal " << optimal;
}

}  // namespace
}  // namespace compressd
