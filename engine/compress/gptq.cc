// GPTQ (Frantar et al. 2022): quantize the columns of W one at a time, in order, and spread
// each column's rounding error over the not-yet-quantized columns with the inverse Hessian,
// via the upper Cholesky factor U of H^-1 (H = X^T X + damping). Group parameters are fitted
// on the error-updated weights when the first column of a group is reached.
// Rows are independent given U: they are spread over threads.
#include <cmath>
#include <cstdio>

#include "engine/compress/quantize.h"
#include "engine/compress/quantize_internal.h"

namespace compressd {
namespace {

// In-place lower Cholesky of a (n x n, SPD); returns false if not positive definite.
bool Cholesky(std::vector<double>& a, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    double d = a[j * n + j];
    for (int64_t k = 0; k < j; ++k) d -= a[j * n + k] * a[j * n + k];
    if (d <= 0) return false;
    d = std::sqrt(d);
    a[j * n + j] = d;
    for (int64_t i = j + 1; i < n; ++i) {
      double s = a[i * n + j];
      for (int64_t k = 0; k < j; ++k) s -= a[i * n + k] * a[j * n + k];
      a[i * n + j] = s / d;
    }
    for (int64_t k = j + 1; k < n; ++k) a[j * n + k] = 0;
  }
  return true;
}

}  // namespace

// Upper factor U with H^-1 = U^T U; empty if H stays singular after raising the damping.
static std::vector<double> InverseHessianUpper(const std::vector<double>& h, int64_t n, double damping) {
  for (double damp = damping; damp < 10; damp *= 4) {
    std::vector<double> l = quant_detail::DampedH(h, n, damp);
    if (!Cholesky(l, n)) continue;
    // Linv (lower) by forward substitution.
    std::vector<double> li(static_cast<size_t>(n * n), 0.0);
    for (int64_t i = 0; i < n; ++i) {
      li[i * n + i] = 1.0 / l[i * n + i];
      for (int64_t j = 0; j < i; ++j) {
        double s = 0;
        for (int64_t k = j; k < i; ++k) s += l[i * n + k] * li[k * n + j];
        li[i * n + j] = -s / l[i * n + i];
      }
    }
    // Hinv = Linv^T Linv.
    std::vector<double> hinv(static_cast<size_t>(n * n), 0.0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j <= i; ++j) {
        double s = 0;
        for (int64_t k = i; k < n; ++k) s += li[k * n + i] * li[k * n + j];
        hinv[i * n + j] = hinv[j * n + i] = s;
      }
    if (!Cholesky(hinv, n)) continue;
    // Upper U = L^T.
    std::vector<double> u(static_cast<size_t>(n * n), 0.0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j <= i; ++j) u[j * n + i] = hinv[i * n + j];
    return u;
  }
  return {};
}

GroupCodes GptqQuantize(const std::vector<float>& w, int64_t rows, int64_t cols, int bits,
                        int group, const std::vector<double>& h, double damping, int threads) {
  const int qmax = (1 << bits) - 1;
  const int64_t ng = (cols + group - 1) / group;
  GroupCodes out;
  out.codes.resize(static_cast<size_t>(rows * cols));
  out.scale.resize(static_cast<size_t>(rows * ng));
  out.min.resize(out.scale.size());
  const std::vector<double> u = InverseHessianUpper(h, cols, damping);
  // Group ranges are fitted on the error-weighted squared error (diag H), as RTN does.
  std::vector<double> diag(static_cast<size_t>(cols));
  for (int64_t c = 0; c < cols; ++c) diag[c] = std::max(h[c * cols + c], 1e-12);
  quant_detail::ParallelRows(rows, threads, [&](int64_t rb, int64_t re) {
    std::vector<double> row(static_cast<size_t>(cols));
    for (int64_t r = rb; r < re; ++r) {
      for (int64_t c = 0; c < cols; ++c) row[c] = w[r * cols + c];
      float s = 1, m = 0;
      for (int64_t i = 0; i < cols; ++i) {
        if (i % group == 0) {
          const int64_t len = std::min<int64_t>(group, cols - i);
          quant_detail::FitGroup(row.data() + i, diag.data() + i, len, bits, &s, &m);
          out.scale[r * ng + i / group] = s;
          out.min[r * ng + i / group] = m;
        }
        const uint8_t q = quant_detail::Code(row[i], s, m, qmax);
        out.codes[r * cols + i] = q;
        if (u.empty()) continue;
        const double err = (row[i] - (q * static_cast<double>(s) + m)) / u[i * cols + i];
        const double* ui = u.data() + i * cols;
        for (int64_t j = i + 1; j < cols; ++j) row[j] -= err * ui[j];
      }
    }
  });
  return out;
}

}  // namespace compressd
