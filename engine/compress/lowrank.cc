#include "engine/compress/lowrank.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

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

namespace {

// Top-l eigenpairs of the PSD m x m matrix g by randomized subspace iteration (8 power
// steps with modified Gram-Schmidt), then Jacobi on the l x l Rayleigh quotient. Returns the
// eigenvalues (descending); vecs becomes m x l row-major.
std::vector<double> TopEigen(const std::vector<double>& g, int64_t m, int64_t l,
                             std::vector<double>* vecs) {
  std::mt19937_64 rng(12345);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<double> q(static_cast<size_t>(l * m)), z(static_cast<size_t>(l * m));  // columns
  for (double& v : q) v = nd(rng);
  auto orthonormalize = [&](std::vector<double>& a) {
    for (int64_t j = 0; j < l; ++j) {
      double* aj = &a[j * m];
      for (int pass = 0; pass < 2; ++pass) {  // twice is enough (Kahan)
        for (int64_t i = 0; i < j; ++i) {
          const double* ai = &a[i * m];
          double d = 0;
          for (int64_t k = 0; k < m; ++k) d += ai[k] * aj[k];
          for (int64_t k = 0; k < m; ++k) aj[k] -= d * ai[k];
        }
      }
      double nrm = 0;
      for (int64_t k = 0; k < m; ++k) nrm += aj[k] * aj[k];
      nrm = std::sqrt(nrm);
      if (nrm < 1e-300) {  // rank-deficient: any unit vector orthogonal later is fine
        for (int64_t k = 0; k < m; ++k) aj[k] = nd(rng);
        --j;
        continue;
      }
      for (int64_t k = 0; k < m; ++k) aj[k] /= nrm;
    }
  };
  auto multiply = [&](const std::vector<double>& in, std::vector<double>& out) {
    for (int64_t j = 0; j < l; ++j) {
      for (int64_t i = 0; i < m; ++i) {
        const double* gi = &g[i * m];
        const double* v = &in[j * m];
        double d = 0;
        for (int64_t k = 0; k < m; ++k) d += gi[k] * v[k];
        out[j * m + i] = d;
      }
    }
  };
  orthonormalize(q);
  for (int it = 0; it < 8; ++it) {
    multiply(q, z);
    q.swap(z);
    orthonormalize(q);
  }
  multiply(q, z);
  std::vector<double> b(static_cast<size_t>(l * l));
  for (int64_t i = 0; i < l; ++i) {
    for (int64_t j = 0; j < l; ++j) {
      double d = 0;
      for (int64_t k = 0; k < m; ++k) d += q[i * m + k] * z[j * m + k];
      b[i * l + j] = d;
    }
  }
  for (int64_t i = 0; i < l; ++i) {  // symmetrise rounding
    for (int64_t j = i + 1; j < l; ++j) b[i * l + j] = b[j * l + i] = 0.5 * (b[i * l + j] + b[j * l + i]);
  }
  std::vector<double> w;
  std::vector<double> vals = SymmetricEigen(std::move(b), l, &w);
  vecs->assign(static_cast<size_t>(m * l), 0.0);
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t j = 0; j < l; ++j) {
      double d = 0;
      for (int64_t i = 0; i < l; ++i) d += q[i * m + r] * w[i * l + j];
      (*vecs)[r * l + j] = d;
    }
  }
  return vals;
}

}  // namespace

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
  // Rank known up front (explicit or by ratio): only the top eigenpairs are needed, found by
  // subspace iteration when they are a small part of the spectrum; the energy rule needs all.
  int64_t k_known = 0;
  if (p.rank > 0) {
    k_known = p.rank;
  } else if (p.energy <= 0) {
    k_known = static_cast<int64_t>(std::floor(p.ratio * static_cast<double>(rows * cols) /
                                              static_cast<double>(rows + cols)));
  }
  k_known = k_known > 0 ? std::min(k_known, m) : 0;
  std::vector<double> vecs;
  std::vector<double> lam;
  int64_t vs = m;  // columns of vecs
  if (k_known > 0 && k_known + 16 < m * 6 / 10) {
    vs = k_known + 16;
    lam = TopEigen(g, m, vs, &vecs);
  } else {
    lam = SymmetricEigen(std::move(g), m, &vecs);
  }
  int64_t k;
  if (k_known > 0) {
    k = k_known;
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
      for (int64_t j = 0; j < k; ++j) u[r * k + j] = static_cast<float>(vecs[r * vs + j]);
    }
    for (int64_t j = 0; j < k; ++j) {
      for (int64_t c = 0; c < cols; ++c) {
        double acc = 0;
        for (int64_t r = 0; r < rows; ++r) acc += vecs[r * vs + j] * w[r * cols + c];
        v[j * cols + c] = static_cast<float>(acc);
      }
    }
  } else {  // V = E_k^T diag(1/s), U = A E_k (E_k: eigenvectors of A^T A)
    for (int64_t j = 0; j < k; ++j) {
      for (int64_t c = 0; c < cols; ++c) v[j * cols + c] = static_cast<float>(vecs[c * vs + j] / s[c]);
    }
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < k; ++j) {
        double acc = 0;
        for (int64_t c = 0; c < cols; ++c) acc += a[r * cols + c] * vecs[c * vs + j];
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
