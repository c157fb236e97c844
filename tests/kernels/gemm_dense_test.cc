// Parity of every dense GEMM path (AVX2, AVX-512, and Gemm() under each ISA cap) against the
// double-accumulating scalar reference, over ragged shapes: cols that are not multiples of
// the vector width, odd row counts, sub-ranges of rows, token counts around the 4-token tile
// and large enough to trigger token and column blocking.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/gemm.h"
#include "kernels/types.h"

namespace compressd::kernels {
namespace {

using GemmFn = void (*)(const PackedWeight&, const float*, int64_t, float*, int64_t, int64_t,
                        int64_t);

struct Path {
  const char* name;
  GemmFn fn;
  bool available;
};

std::vector<Path> Paths() {
  const CpuFeatures& f = GetCpuFeatures();
  const bool avx2 = f.avx2 && f.fma && f.f16c;
  const bool avx512 = avx2 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq;
  return {{"avx2", &GemmDenseAvx2, avx2}, {"avx512", &GemmDenseAvx512, avx512}};
}

// Random weights stored in dtype, plus the fp32 value every element decodes to.
struct DenseWeight {
  std::vector<uint8_t> bytes;
  PackedWeight view;
};

DenseWeight MakeWeight(DType dt, int64_t rows, int64_t cols, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  DenseWeight w;
  w.bytes.resize(DenseBytes(dt, rows, cols) + 1);  // +1: never a zero-size buffer
  for (int64_t i = 0; i < rows * cols; ++i) {
    const float v = u(rng);
    if (dt == DType::kF32) {
      reinterpret_cast<float*>(w.bytes.data())[i] = v;
    } else if (dt == DType::kF16) {
      reinterpret_cast<uint16_t*>(w.bytes.data())[i] = F32ToF16(v);
    } else {
      reinterpret_cast<uint16_t*>(w.bytes.data())[i] = F32ToBF16(v);
    }
  }
  w.view.format.kind = WeightKind::kDense;
  w.view.format.dtype = dt;
  w.view.rows = rows;
  w.view.cols = cols;
  w.view.data = w.bytes.data();
  w.view.data_bytes = DenseBytes(dt, rows, cols);
  return w;
}

// Expects y (computed) to match the reference within 1e-5 of sum |w||x| for each output.
void ExpectClose(const PackedWeight& w, const std::vector<float>& x, int64_t n,
                 const std::vector<float>& y, const std::vector<float>& ref, int64_t ldy,
                 int64_t row_begin, int64_t row_end, const std::string& what) {
  std::vector<float> row(static_cast<size_t>(w.cols));
  int failures = 0;
  for (int64_t r = row_begin; r < row_end; ++r) {
    DequantizeRows(w, r, r + 1, row.data());
    for (int64_t t = 0; t < n; ++t) {
      double mag = 0.0;
      for (int64_t c = 0; c < w.cols; ++c) mag += std::fabs(row[c] * x[t * w.cols + c]);
      const double got = y[t * ldy + r], want = ref[t * ldy + r];
      if (std::fabs(got - want) > 1e-5 * mag + 1e-30 && ++failures <= 5) {
        ADD_FAILURE() << what << " r=" << r << " t=" << t << " got " << got << " want " << want
                      << " mag " << mag;
      }
    }
  }
}

const DType kDtypes[] = {DType::kF32, DType::kF16, DType::kBF16};

// The definition a path implements: BF16 weights on AVX512_BF16 CPUs use bf16-rounded
// activations (gemm.h); everything else the exact product.
void Reference(const std::string& path, const PackedWeight& w, const float* x, int64_t n,
               float* y, int64_t ldy, int64_t row_begin, int64_t row_end) {
  const bool bf16_dot = w.format.dtype == DType::kBF16 &&
                        ((path == "avx512" && GetCpuFeatures().avx512bf16) ||
                         (path != "avx2" && path != "avx512" && GemmDenseUsesBf16Dot(w.format)));
  if (bf16_dot) {
    GemmDenseBf16DotRef(w, x, n, y, ldy, row_begin, row_end);
  } else {
    GemmDenseRef(w, x, n, y, ldy, row_begin, row_end);
  }
}

TEST(GemmDenseTest, RaggedShapesMatchReference) {
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int64_t kCols[] = {1, 7, 8, 17, 172, 576, 4096 + 3};
  const int64_t kRows[] = {1, 2, 3, 5, 8, 13, 67};
  const int64_t kTokens[] = {1, 2, 3, 5, 16, 33};
  for (const Path& path : Paths()) {
    if (!path.available) {
      std::printf("[ SKIPPED  ] %s: CPU lacks it\n", path.name);
      continue;
    }
    for (DType dt : kDtypes) {
      for (int64_t cols : kCols) {
        for (int64_t rows : kRows) {
          DenseWeight w = MakeWeight(dt, rows, cols, rng);
          for (int64_t n : kTokens) {
            std::vector<float> x(static_cast<size_t>(n * cols));
            for (float& v : x) v = u(rng);
            const int64_t ldy = rows + 3;  // ldy > rows: untouched columns must stay so
            std::vector<float> y(static_cast<size_t>(n * ldy), -7.0f), ref = y;
            Reference(path.name, w.view, x.data(), n, ref.data(), ldy, 0, rows);
            path.fn(w.view, x.data(), n, y.data(), ldy, 0, rows);
            const std::string what = std::string(path.name) + " " + DTypeName(dt) +
                                     " rows=" + std::to_string(rows) +
                                     " cols=" + std::to_string(cols) + " n=" + std::to_string(n);
            ExpectClose(w.view, x, n, y, ref, ldy, 0, rows, what);
            for (int64_t t = 0; t < n; ++t) {
              for (int64_t r = rows; r < ldy; ++r) ASSERT_EQ(y[t * ldy + r], -7.0f) << what;
            }
          }
        }
      }
    }
  }
}

// Row sub-ranges, as the engine hands each thread: only [row_begin, row_end) is written.
TEST(GemmDenseTest, RowSubRangesWriteOnlyTheirRows) {
  std::mt19937 rng(99);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int64_t rows = 67, cols = 172;
  for (const Path& path : Paths()) {
    if (!path.available) continue;
    for (DType dt : kDtypes) {
      DenseWeight w = MakeWeight(dt, rows, cols, rng);
      for (int64_t n : {1, 5}) {
        std::vector<float> x(static_cast<size_t>(n * cols));
        for (float& v : x) v = u(rng);
        for (auto [b, e] : {std::pair<int64_t, int64_t>{3, 4}, {5, 38}, {33, 67}, {0, 9}}) {
          std::vector<float> y(static_cast<size_t>(n * rows), -7.0f), ref = y;
          Reference(path.name, w.view, x.data(), n, ref.data(), rows, b, e);
          path.fn(w.view, x.data(), n, y.data(), rows, b, e);
          ExpectClose(w.view, x, n, y, ref, rows, b, e, path.name);
          for (int64_t t = 0; t < n; ++t) {
            for (int64_t r = 0; r < rows; ++r) {
              if (r < b || r >= e) {
                ASSERT_EQ(y[t * rows + r], -7.0f) << path.name << " r=" << r;
              }
            }
          }
        }
      }
    }
  }
}

// Prefill-sized batches: token blocks of 64 and column blocks must add up exactly once.
TEST(GemmDenseTest, LargeBatchBlockingMatchesReference) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (const Path& path : Paths()) {
    if (!path.available) continue;
    for (DType dt : kDtypes) {
      for (auto [rows, cols, n] : {std::tuple<int64_t, int64_t, int64_t>{37, 1100, 70},
                                   {9, 4096 + 3, 130},
                                   {6, 300, 257}}) {
        DenseWeight w = MakeWeight(dt, rows, cols, rng);
        std::vector<float> x(static_cast<size_t>(n * cols));
        for (float& v : x) v = u(rng);
        std::vector<float> y(static_cast<size_t>(n * rows)), ref = y;
        Reference(path.name, w.view, x.data(), n, ref.data(), rows, 0, rows);
        path.fn(w.view, x.data(), n, y.data(), rows, 0, rows);
        ExpectClose(w.view, x, n, y, ref, rows, 0, rows,
                    std::string(path.name) + " " + DTypeName(dt) + " n=" + std::to_string(n));
      }
    }
  }
}

// Gemm() must follow the ISA cap; every cap gives the reference's answer.
TEST(GemmDenseTest, DispatchUnderEveryIsaCap) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int64_t rows = 19, cols = 77, n = 6;
  for (CpuIsa cap : {CpuIsa::kScalar, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
    SetIsaCap(cap);
    EXPECT_LE(static_cast<int>(ActiveIsa()), static_cast<int>(cap));
    for (DType dt : kDtypes) {
      DenseWeight w = MakeWeight(dt, rows, cols, rng);
      ASSERT_TRUE(GemmSupports(w.view.format));
      std::vector<float> x(static_cast<size_t>(n * cols));
      for (float& v : x) v = u(rng);
      std::vector<float> y(static_cast<size_t>(n * rows)), ref = y;
      Reference("dispatch", w.view, x.data(), n, ref.data(), rows, 0, rows);
      Gemm(w.view, x.data(), n, y.data(), rows, 0, rows);
      ExpectClose(w.view, x, n, y, ref, rows, 0, rows, IsaName(ActiveIsa()));
    }
  }
  SetIsaCap(CpuIsa::kAvx512);
}

// The bf16-activation definition against the exact product: each activation moves by at
// most 2^-9 of itself when rounded to bf16.
TEST(GemmDenseTest, Bf16DotRefWithinActivationRoundingBound) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int64_t rows = 9, cols = 1000, n = 3;
  DenseWeight w = MakeWeight(DType::kBF16, rows, cols, rng);
  std::vector<float> x(static_cast<size_t>(n * cols));
  for (float& v : x) v = u(rng);
  std::vector<float> exact(static_cast<size_t>(n * rows)), dot = exact;
  GemmDenseRef(w.view, x.data(), n, exact.data(), rows, 0, rows);
  GemmDenseBf16DotRef(w.view, x.data(), n, dot.data(), rows, 0, rows);
  std::vector<float> row(static_cast<size_t>(cols));
  bool any_diff = false;
  for (int64_t r = 0; r < rows; ++r) {
    DequantizeRows(w.view, r, r + 1, row.data());
    for (int64_t t = 0; t < n; ++t) {
      double mag = 0;
      for (int64_t c = 0; c < cols; ++c) mag += std::fabs(row[c] * x[t * cols + c]);
      const double err = std::fabs(double(dot[t * rows + r]) - exact[t * rows + r]);
      EXPECT_LE(err, mag / 512 + 1e-6 * mag) << "r=" << r << " t=" << t;
      any_diff = any_diff || err > 0;
    }
  }
  EXPECT_TRUE(any_diff) << "the activations were not rounded";
}

// A token's outputs are bit-identical whether it is computed alone or in a batch of 16 (the
// engine's greedy batch invariance rests on this), here for the vdpbf16ps path.
TEST(GemmDenseTest, Bf16DotBatchInvariance) {
  const CpuFeatures& f = GetCpuFeatures();
  if (!(f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512bf16)) {
    GTEST_SKIP() << "CPU lacks AVX512_BF16";
  }
  std::mt19937 rng(12);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int64_t rows = 37, cols = 2100, n = 16;
  DenseWeight w = MakeWeight(DType::kBF16, rows, cols, rng);
  std::vector<float> x(static_cast<size_t>(n * cols));
  for (float& v : x) v = u(rng);
  std::vector<float> all(static_cast<size_t>(n * rows));
  GemmDenseAvx512(w.view, x.data(), n, all.data(), rows, 0, rows);
  for (int64_t t = 0; t < n; ++t) {
    std::vector<float> one(static_cast<size_t>(rows));
    GemmDenseAvx512(w.view, x.data() + t * cols, 1, one.data(), rows, 0, rows);
    for (int64_t r = 0; r < rows; ++r) ASSERT_EQ(one[r], all[t * rows + r]) << "t=" << t;
  }
  // And whatever the row range a thread gets.
  std::vector<float> part(static_cast<size_t>(n * rows));
  GemmDenseAvx512(w.view, x.data(), n, part.data(), rows, 0, 13);
  GemmDenseAvx512(w.view, x.data(), n, part.data(), rows, 13, rows);
  EXPECT_EQ(part, all);
}

// Every dtype on every ISA path: a token's outputs are bit-identical alone, in any batch size
// and for any row range (the engine's thread pool hands out row chunks dynamically). Before
// the fix, fp32-FMA rows in 1/2-row remainders used another reduction tree than 4-row tiles,
// and decode summed > 1024 columns in one chain while batches summed 1024-column blocks.
TEST(GemmDenseTest, EveryPathIsBatchAndRowRangeInvariant) {
  std::mt19937 rng(13);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (const Path& path : Paths()) {
    if (!path.available) continue;
    for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
      for (int64_t cols : {64, 1000, 2100}) {
        const int64_t rows = 23, n = 9;
        DenseWeight w = MakeWeight(dt, rows, cols, rng);
        std::vector<float> x(static_cast<size_t>(n * cols));
        for (float& v : x) v = u(rng);
        std::vector<float> all(static_cast<size_t>(n * rows));
        path.fn(w.view, x.data(), n, all.data(), rows, 0, rows);
        const std::string what = std::string(path.name) + " " + DTypeName(dt) + " cols " +
                                 std::to_string(cols);
        for (int64_t t0 = 0; t0 < n; t0 += 3) {  // batches of 1, 2 and 3 tokens
          const int64_t nt = std::min<int64_t>(1 + t0 / 3, n - t0);
          std::vector<float> some(static_cast<size_t>(nt * rows));
          path.fn(w.view, x.data() + t0 * cols, nt, some.data(), rows, 0, rows);
          for (int64_t t = 0; t < nt; ++t) {
            for (int64_t r = 0; r < rows; ++r) {
              ASSERT_EQ(some[t * rows + r], all[(t0 + t) * rows + r]) << what << " t=" << t0 + t;
            }
          }
        }
        for (int64_t split : {1, 5, 13, 22}) {  // remainders of 1, 2 and 3 rows on each side
          std::vector<float> part(static_cast<size_t>(n * rows));
          path.fn(w.view, x.data(), n, part.data(), rows, 0, split);
          path.fn(w.view, x.data(), n, part.data(), rows, split, rows);
          ASSERT_EQ(part, all) << what << " split " << split;
          std::vector<float> one(static_cast<size_t>(rows));
          path.fn(w.view, x.data(), 1, one.data(), rows, 0, split);
          path.fn(w.view, x.data(), 1, one.data(), rows, split, rows);
          for (int64_t r = 0; r < rows; ++r) ASSERT_EQ(one[r], all[r]) << what << " split " << split;
        }
      }
    }
  }
}

TEST(GemmDenseTest, ZeroColsGivesZeros) {
  for (const Path& path : Paths()) {
    if (!path.available) continue;
    PackedWeight w;
    w.format.dtype = DType::kF32;
    w.rows = 3;
    w.cols = 0;
    float dummy = 0.0f;
    w.data = &dummy;
    std::vector<float> y(6, 5.0f);
    path.fn(w, &dummy, 2, y.data(), 3, 0, 3);
    for (float v : y) EXPECT_EQ(v, 0.0f) << path.name;
  }
}

}  // namespace
}  // namespace compressd::kernels
