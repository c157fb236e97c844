#include "engine/compress/lowrank.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "engine/compress/sparse_util.h"
#include "engine/core/logging.h"
#include "kernels/gemm.h"
#include "kernels/quant.h"

namespace compressd {
namespace {

// A dense BF16 or group-quantized Linear from fp32 values [rows][cols].
absl::StatusOr<Linear> FactorLinear(const std::vector<float>& v, int64_t rows, int64_t cols,
                                    int bits, const std::string& name) {
  if (bits == 8 || bits == 4) {
    kernels::PackedQuant q = kernels::PackGroup(v.data(), rows, cols, bits, 64);
    std::vector<std::vector<uint8_t>> b = std::move(q.buffers);
    Linear l = LinearFromBuffers(q.view.format, rows, cols, std::move(b),
                                 absl::StrCat("int", bits, "-g64"));
    if (!kernels::GemmSupports(l.w.format)) {
      return absl::UnimplementedError(absl::StrCat(name, ": int", bits, " factors unsupported"));
    }
    return l;
  }
  TensorView t;
  t.name = name;
  t.dtype = DType::kF32;
  t.shape = {rows, cols};
  t.data = v.data();
  t.bytes = v.size() * sizeof(float);
  return MakeDenseLinear(t, DType::kBF16);
}

}  // namespace

std::vector<double> SymmetricEigen(std::vector<double> a, int64_t m, std::vector<double>* vecs) {
  // vt holds the eigenvectors as rows (contiguous rotations); transposed at the end. Each
  // rotation updates rows p and q of the symmetric matrix contiguously and mirrors them into
  // columns p and q.
  std::vector<double> vt(static_cast<size_t>(m * m), 0.0);
  for (int64_t i = 0; i < m; ++i) vt[i * m + i] = 1.0;
  double total = 0;
  for (double x : a) total += x * x;
  for (int sweep = 0; sweep < 60; ++sweep) {
    double off = 0;
    for (int64_t p = 0; p < m; ++p) {
      for (int64_t q = p + 1; q < m; ++q) off += a[p * m + q] * a[p * m + q];
    }
    // Off-diagonal mass below 1e-11 of the matrix norm: eigenvectors good to ~1e-11.
    if (off <= 1e-22 * total || off == 0) break;
    for (int64_t p = 0; p < m; ++p) {
      for (int64_t q = p + 1; q < m; ++q) {
        const double apq = a[p * m + q];
        const double app = a[p * m + p], aqq = a[q * m + q];
        if (std::fabs(apq) <= 1e-14 * std::sqrt(std::fabs(app * aqq)) || apq == 0) continue;
        const double theta = (aqq - app) / (2 * apq);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        double* rp = &a[p * m];
        double* rq = &a[q * m];
        for (int64_t k = 0; k < m; ++k) {
          const double x = rp[k], y = rq[k];
          rp[k] = c * x - s * y;
          rq[k] = s * x + c * y;
        }
        for (int64_t k = 0; k < m; ++k) {
          a[k * m + p] = rp[k];
          a[k * m + q] = rq[k];
        }
        rp[p] = app - t * apq;
        rq[q] = aqq + t * apq;
        rp[q] = rq[p] = 0.0;
        double* vp = &vt[p * m];
        double* vq = &vt[q * m];
        for (int64_t k = 0; k < m; ++k) {
          const double x = vp[k], y = vq[k];
          vp[k] = c * x - s * y;
          vq[k] = s * x + c * y;
        }
      }
    }
  }
  std::vector<int64_t> order(static_cast<size_t>(m));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](int64_t x, int64_t y) { return a[x * m + x] > a[y * m + y]; });
  std::vector<double> vals(static_cast<size_t>(m));
  vecs->assign(static_cast<size_t>(m * m), 0.0);
  for (int64_t j = 0; j < m; ++j) {
    vals[j] = a[order[j] * m + order[j]];
    for (int64_t k = 0; k < m; ++k) (*vecs)[k * m + j] = vt[order[j] * m + k];
  }
  return vals;
}

absl::StatusOr<Linear> CompressLowRank(const TensorView& t, const LowRankParams& p,
                                       const ActivationStats* stats) {
  if (t.shape.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", t.name, " is not a matrix"));
  }
  if (p.factor_bits != 0 && p.factor_bits != 8 && p.factor_bits != 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", t.name, ": factor_bits must be 0, 8 or 4, got ", p.factor_bits));
  }
  if (p.rank < 0 || p.energy < 0 || p.energy > 1 || p.ratio < 0) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", t.name, ": bad low-rank parameters"));
  }
  const int64_t rows = t.shape[0], cols = t.shape[1];
  ASSIGN_OR_RETURN(std::vector<float> w, WeightValuesF32(t));
  // Column scale s (importance weighting), clamped away from zero so it can be undone.
  std::vector<double> s(static_cast<size_t>(cols), 1.0);
  if (p.weighted && stats != nullptr && stats->cols == cols && stats->n_samples > 0) {
    double mean = 0;
    for (int64_t c = 0; c < cols; ++c) mean += (s[c] = std::sqrt(stats->MeanSq(c)));
    mean /= std::max<int64_t>(cols, 1);
    if (mean > 0) {
      for (double& x : s) x = std::max(x, 1e-3 * mean);
    } else {
      std::fill(s.begin(), s.end(), 1.0);
    }
  }
  const bool left = rows <= cols;  // eigen-decompose the smaller Gram matrix
  const int64_t m = left ? rows : cols;
  std::vector<double> g(static_cast<size_t>(m * m), 0.0);
  std::vector<double> a(static_cast<size_t>(rows * cols));  // A = W diag(s)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) a[r * cols + c] = w[r * cols + c] * s[c];
  }
  if (left) {
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t j = i; j < rows; ++j) {
        double acc = 0;
        for (int64_t c = 0; c < cols; ++c) acc += a[i * cols + c] * a[j * cols + c];
        g[i * m + j] = g[j * m + i] = acc;
      }
    }
  } else {
    for (int64_t r = 0; r < rows; ++r) {
      const double* ar = &a[r * cols];
      for (int64_t i = 0; i < cols; ++i) {
        const double ai = ar[i];
        if (ai == 0) continue;
        double* gi = &g[i * m];
        for (int64_t j = i; j < cols; ++j) gi[j] += ai * ar[j];
      }
    }
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < i; ++j) g[i * m + j] = g[j * m + i];
    }
  }
  std::vector<double> vecs;
  const std::vector<double> lam = SymmetricEigen(std::move(g), m, &vecs);
  int64_t k;
  if (p.rank > 0) {
    k = p.rank;
  } else if (p.energy > 0) {
    double total = 0, acc = 0;
    for (double l : lam) total += std::max(l, 0.0);
    k = m;
    for (int64_t i = 0; i < m; ++i) {
      acc += std::max(lam[i], 0.0);
      if (acc >= p.energy * total) {
        k = i + 1;
        break;
      }
    }
  } else {
    k = static_cast<int64_t>(std::floor(p.ratio * static_cast<double>(rows * cols) /
                                        static_cast<double>(rows + cols)));
  }
  k = std::clamp<int64_t>(k, 1, m);
  std::vector<float> u(static_cast<size_t>(rows * k)), v(static_cast<size_t>(k * cols));
  if (left) {  // U = E_k (eigenvectors of A A^T), V = U^T W
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < k; ++j) u[r * k + j] = static_cast<float>(vecs[r * m + j]);
    }
    for (int64_t j = 0; j < k; ++j) {
      for (int64_t c = 0; c < cols; ++c) {
        double acc = 0;
        for (int64_t r = 0; r < rows; ++r) acc += vecs[r * m + j] * w[r * cols + c];
        v[j * cols + c] = static_cast<float>(acc);
      }
    }
  } else {  // V = E_k^T diag(1/s), U = A E_k (E_k: eigenvectors of A^T A)
    for (int64_t j = 0; j < k; ++j) {
      for (int64_t c = 0; c < cols; ++c) v[j * cols + c] = static_cast<float>(vecs[c * m + j] / s[c]);
    }
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < k; ++j) {
        double acc = 0;
        for (int64_t c = 0; c < cols; ++c) acc += a[r * cols + c] * vecs[c * m + j];
        u[r * k + j] = static_cast<float>(acc);
      }
    }
  }
  ASSIGN_OR_RETURN(Linear vl, FactorLinear(v, k, cols, p.factor_bits, t.name + ".first"));
  ASSIGN_OR_RETURN(Linear ul, FactorLinear(u, rows, k, p.factor_bits, t.name));
  ul.first = std::make_shared<const Linear>(std::move(vl));
  ul.format_name = absl::StrCat("lowrank-r", k, p.factor_bits ? absl::StrCat("-int", p.factor_bits)
                                                              : std::string("-bf16"));
  return ul;
}

}  // namespace compressd
