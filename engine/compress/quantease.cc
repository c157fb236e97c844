// QuantEase (Behdin et al. 2023): cyclic coordinate descent on the layer-wise objective
// f(Q) = tr((W - Q) H (W - Q)^T). For one row with residual e = w - q and g = H e, the best
// value of coordinate j with the others fixed is q_j* = w_j + (g_j - H_jj e_j) / H_jj; it is
// projected onto the group's grid, and g is updated with the change of e_j (O(cols) per
// coordinate). Starts from the better of GPTQ and weighted RTN per row (grids fixed from it)
// and runs `passes` sweeps;
// each sweep never increases f. Rows are independent: spread over threads.
#include <algorithm>
#include <cstdio>

#include "engine/compress/quantize.h"
#include "engine/compress/quantize_internal.h"

namespace compressd {

GroupCodes QuantEaseQuantize(const std::vector<float>& w, int64_t rows, int64_t cols, int bits,
                             int group, const std::vector<double>& h, double damping, int passes,
                             int threads) {
  const int qmax = (1 << bits) - 1;
  const int64_t ng = (cols + group - 1) / group;
  GroupCodes out = GptqQuantize(w, rows, cols, bits, group, h, damping, threads);
  const std::vector<double> hd = quant_detail::DampedH(h, cols, damping);
  // Per row, start from whichever of GPTQ and weighted round-to-nearest has the lower
  // objective (the objective is separable over rows).
  std::vector<double> diag(static_cast<size_t>(cols));
  for (int64_t c = 0; c < cols; ++c) diag[c] = std::max(h[c * cols + c], 1e-12);
  auto objective = [&](const float* wr, const uint8_t* q, const float* s, const float* m) {
    std::vector<double> e(static_cast<size_t>(cols));
    for (int64_t c = 0; c < cols; ++c) e[c] = wr[c] - (q[c] * double(s[c / group]) + m[c / group]);
    double f = 0;
    for (int64_t i = 0; i < cols; ++i) {
      double a = 0;
      for (int64_t j = 0; j < cols; ++j) a += hd[i * cols + j] * e[j];
      f += e[i] * a;
    }
    return f;
  };
  quant_detail::ParallelRows(rows, threads, [&](int64_t rb, int64_t re) {
    std::vector<double> v(static_cast<size_t>(group));
    std::vector<uint8_t> q(static_cast<size_t>(cols));
    std::vector<float> s(static_cast<size_t>(ng)), m(static_cast<size_t>(ng));
    for (int64_t r = rb; r < re; ++r) {
      const float* wr = w.data() + r * cols;
      for (int64_t g0 = 0; g0 < cols; g0 += group) {
        const int64_t len = std::min<int64_t>(group, cols - g0);
        for (int64_t i = 0; i < len; ++i) v[i] = wr[g0 + i];
        quant_detail::FitGroup(v.data(), diag.data() + g0, len, bits, &s[g0 / group], &m[g0 / group]);
        for (int64_t i = 0; i < len; ++i) q[g0 + i] = quant_detail::Code(v[i], s[g0 / group], m[g0 / group], qmax);
      }
      uint8_t* oq = out.codes.data() + r * cols;
      float* os = out.scale.data() + r * ng;
      float* om = out.min.data() + r * ng;
      if (objective(wr, q.data(), s.data(), m.data()) < objective(wr, oq, os, om)) {
        std::copy(q.begin(), q.end(), oq);
        std::copy(s.begin(), s.end(), os);
        std::copy(m.begin(), m.end(), om);
      }
    }
  });
  quant_detail::ParallelRows(rows, threads, [&](int64_t rb, int64_t re) {
    std::vector<double> e(static_cast<size_t>(cols)), g(static_cast<size_t>(cols));
    for (int64_t r = rb; r < re; ++r) {
      const float* wr = w.data() + r * cols;
      uint8_t* q = out.codes.data() + r * cols;
      const float* s = out.scale.data() + r * ng;
      const float* m = out.min.data() + r * ng;
      for (int64_t c = 0; c < cols; ++c) e[c] = wr[c] - (q[c] * double(s[c / group]) + m[c / group]);
      for (int64_t i = 0; i < cols; ++i) {
        double acc = 0;
        const double* hi = hd.data() + i * cols;
        for (int64_t j = 0; j < cols; ++j) acc += hi[j] * e[j];
        g[i] = acc;
      }
      for (int p = 0; p < passes; ++p) {
        for (int64_t j = 0; j < cols; ++j) {
          const double hjj = hd[j * cols + j];
          const double target = wr[j] + (g[j] - hjj * e[j]) / hjj;
          const float sj = s[j / group], mj = m[j / group];
          const uint8_t qj = quant_detail::Code(target, sj, mj, qmax);
          if (qj == q[j]) continue;
          q[j] = qj;
          const double ne = wr[j] - (qj * double(sj) + mj);
          const double d = ne - e[j];
          e[j] = ne;
          const double* hj = hd.data() + j * cols;
          for (int64_t i = 0; i < cols; ++i) g[i] += d * hj[i];
        }
      }
    }
  });
  return out;
}

}  // namespace compressd
