// Pruning (engine/compress/sparse.h): sparsity reached per row, 2:4 pattern, GQSA groups,
// Wanda keeps weights on loud input channels that magnitude pruning drops, parameter errors.
#include <cmath>
#include <random>
#include <vector>

#include "engine/compress/sparse.h"
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

std::vector<float> Dense(const Linear& l) {
  std::vector<float> out(l.rows() * l.cols());
  kernels::DequantizeRows(l.w, 0, l.rows(), out.data());
  return out;
}

std::vector<float> Random(int64_t n, int seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> w(n);
  for (float& x : w) x = u(rng);
  return w;
}

TEST(CompressSparse, UnstructuredSparsityPerRow) {
  const int64_t rows = 8, cols = 200;
  const auto w = Random(rows * cols, 1);
  SparseParams p;
  p.sparsity = 0.75;
  auto l = CompressSparse(View(w, rows, cols), p, nullptr);
  ASSERT_TRUE(l.ok()) << l.status();
  const auto d = Dense(*l);
  for (int64_t r = 0; r < rows; ++r) {
    int nz = 0;
    float min_kept = 9, max_dropped = 0;
    for (int64_t c = 0; c < cols; ++c) {
      if (d[r * cols + c] != 0) {
        ++nz;
        min_kept = std::min(min_kept, std::fabs(w[r * cols + c]));
      } else {
        max_dropped = std::max(max_dropped, std::fabs(w[r * cols + c]));
      }
    }
    EXPECT_EQ(nz, 50);
    EXPECT_GE(min_kept, max_dropped);  // magnitude order
  }
  EXPECT_LT(l->bytes(), static_cast<uint64_t>(rows * cols * 2 * 0.4));
}

TEST(CompressSparse, WandaKeepsLoudChannels) {
  const int64_t rows = 4, cols = 64;
  std::vector<float> w = Random(rows * cols, 2);
  for (int64_t r = 0; r < rows; ++r) w[r * cols + 7] = 0.01f;  // small weight, loud input
  ActivationStats st;
  st.cols = cols;
  st.n_samples = 1;
  st.col_sq_sum.assign(cols, 1.0);
  st.col_sq_sum[7] = 1e6;
  SparseParams p;
  auto wanda = CompressSparse(View(w, rows, cols), p, &st);
  p.activation_aware = false;
  auto mag = CompressSparse(View(w, rows, cols), p, &st);
  ASSERT_TRUE(wanda.ok() && mag.ok());
  const auto dw = Dense(*wanda), dm = Dense(*mag);
  for (int64_t r = 0; r < rows; ++r) {
    EXPECT_NE(dw[r * cols + 7], 0.0f);
    EXPECT_EQ(dm[r * cols + 7], 0.0f);
  }
}

TEST(CompressSparse, TwoFourPattern) {
  const int64_t rows = 5, cols = 30;
  const auto w = Random(rows * cols, 3);
  SparseParams p;
  p.kind = SparseParams::Kind::kTwoFour;
  auto l = CompressSparse(View(w, rows, cols), p, nullptr);
  ASSERT_TRUE(l.ok()) << l.status();
  const auto d = Dense(*l);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < cols; g += 4) {
      int nz = 0;
      for (int64_t c = g; c < std::min(cols, g + 4); ++c) nz += d[r * cols + c] != 0;
      EXPECT_EQ(nz, std::min<int64_t>(2, cols - g));
    }
  }
}

TEST(CompressSparse, GroupSparsityInt4) {
  const int64_t rows = 6, cols = 160;
  const auto w = Random(rows * cols, 4);
  SparseParams p;
  p.kind = SparseParams::Kind::kGroup;
  p.bits = 4;
  p.sparsity = 0.5;
  auto l = CompressSparse(View(w, rows, cols), p, nullptr);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->format_name, "gqsa-g16-int4");
  const auto d = Dense(*l);
  for (int64_t r = 0; r < rows; ++r) {
    int kept = 0;
    for (int64_t g = 0; g < cols / 16; ++g) {
      bool any = false;
      for (int j = 0; j < 16; ++j) {
        const float v = d[r * cols + g * 16 + j];
        if (v != 0) {
          any = true;
          EXPECT_NEAR(v, w[r * cols + g * 16 + j], 0.08f);
        }
      }
      kept += any;
    }
    EXPECT_EQ(kept, 5);
  }
}

TEST(CompressSparse, BadParameters) {
  const auto w = Random(64, 5);
  SparseParams p;
  p.sparsity = 1.0;
  EXPECT_EQ(CompressSparse(View(w, 4, 16), p, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  p.sparsity = 0.5;
  p.bits = 4;  // int4 only for groups
  EXPECT_EQ(CompressSparse(View(w, 4, 16), p, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  p.kind = SparseParams::Kind::kGroup;
  p.group_size = 32;
  EXPECT_EQ(CompressSparse(View(w, 4, 16), p, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace compressd
