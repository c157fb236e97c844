#include "engine/compress/sparse.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "engine/compress/sparse_util.h"

namespace compressd {

absl::StatusOr<Linear> CompressSparse(const TensorView& t, const SparseParams& p,
                                      const ActivationStats* stats) {
  if (t.shape.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", t.name, " is not a matrix"));
  }
  const int64_t rows = t.shape[0], cols = t.shape[1];
  if (!(p.sparsity >= 0.0 && p.sparsity < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", t.name, ": sparsity must be in [0, 1), got ", p.sparsity));
  }
  if (p.kind == SparseParams::Kind::kGroup) {
    if (p.group_size != kernels::kSparseGroupCols) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor ", t.name, ": group sparsity supports group_size 16, got ", p.group_size));
    }
    if (p.bits != 4 && p.bits != 16) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", t.name, ": group sparsity bits must be 4 or 16, got ", p.bits));
    }
  } else if (p.bits != 16) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor ", t.name, ": unstructured and 2:4 sparsity store fp16 values (bits 16), got ",
        p.bits));
  }
  ASSIGN_OR_RETURN(std::vector<float> w, WeightValuesF32(t));
  // Column weight of the importance: ||x_c|| (Wanda) or 1 (magnitude).
  std::vector<float> colw(static_cast<size_t>(cols), 1.0f);
  if (p.activation_aware && stats != nullptr && stats->cols == cols && stats->n_samples > 0) {
    for (int64_t c = 0; c < cols; ++c) colw[c] = static_cast<float>(std::sqrt(stats->MeanSq(c)));
  }
  auto importance = [&](int64_t r, int64_t c) { return std::fabs(w[r * cols + c]) * colw[c]; };

  if (p.kind == SparseParams::Kind::kGroup) {
    const int64_t ng = (cols + 15) / 16;
    const int64_t keep_n = std::max<int64_t>(
        1, static_cast<int64_t>(std::llround(static_cast<double>(ng) * (1.0 - p.sparsity))));
    std::vector<uint8_t> keep(static_cast<size_t>(rows * ng), 0);
    std::vector<std::pair<double, int64_t>> score(static_cast<size_t>(ng));
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t g = 0; g < ng; ++g) {
        double s = 0;
        for (int64_t c = g * 16; c < std::min(cols, g * 16 + 16); ++c) {
          const double v = importance(r, c);
          s += v * v;
        }
        score[g] = {s, g};
      }
      std::nth_element(score.begin(), score.begin() + (keep_n - 1), score.end(),
                       [](auto& a, auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
      for (int64_t i = 0; i < std::min(keep_n, ng); ++i) keep[r * ng + score[i].second] = 1;
    }
    return LinearFromSparse(kernels::PackSparseGroup(w.data(), keep.data(), rows, cols, p.bits));
  }

  std::vector<uint8_t> keep(static_cast<size_t>(rows * cols), 0);
  if (p.kind == SparseParams::Kind::kTwoFour) {
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t g = 0; g < cols; g += 4) {
        const int64_t e = std::min(cols, g + 4);
        int64_t best[2] = {-1, -1};
        for (int64_t c = g; c < e; ++c) {
          if (best[0] < 0 || importance(r, c) > importance(r, best[0])) {
            best[1] = best[0];
            best[0] = c;
          } else if (best[1] < 0 || importance(r, c) > importance(r, best[1])) {
            best[1] = c;
          }
        }
        for (int64_t b : best) {
          if (b >= 0) keep[r * cols + b] = 1;
        }
      }
    }
    return LinearFromSparse(kernels::PackSparseTwoFour(w.data(), keep.data(), rows, cols));
  }
  const int64_t keep_n = static_cast<int64_t>(
      std::llround(static_cast<double>(cols) * (1.0 - p.sparsity)));
  std::vector<int64_t> idx(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    std::iota(idx.begin(), idx.end(), 0);
    if (keep_n > 0 && keep_n < cols) {
      std::nth_element(idx.begin(), idx.begin() + (keep_n - 1), idx.end(), [&](int64_t a, int64_t b) {
        const float ia = importance(r, a), ib = importance(r, b);
        return ia > ib || (ia == ib && a < b);
      });
    }
    for (int64_t i = 0; i < std::min(keep_n, cols); ++i) keep[r * cols + idx[i]] = 1;
  }
  return LinearFromSparse(kernels::PackSparseUnstructured(w.data(), keep.data(), rows, cols));
}

}  // namespace compressd
