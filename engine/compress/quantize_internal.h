// Helpers shared by the calibrated quantizers (gptq.cc, quantease.cc). Not a public API.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

#include "kernels/quant.h"

namespace compressd::quant_detail {

// Asymmetric (scale, min) for values v[0..len) on a 2^bits grid, range shrink search on the
// (optionally weighted) squared error; rounded to the stored fp16 grid.
inline void FitGroup(const double* v, const double* wt, int64_t len, int bits, float* scale,
                     float* min) {
  const int qmax = (1 << bits) - 1;
  double lo = 0, hi = 0;
  for (int64_t i = 0; i < len; ++i) {
    lo = std::min(lo, v[i]);
    hi = std::max(hi, v[i]);
  }
  double best = INFINITY;
  for (int a = 0; a <= 16; ++a) {
    for (int b = 0; b <= 4; ++b) {
      float s = static_cast<float>((hi * (1.0 - 0.5 * a / 16) - lo * (1.0 - 0.1 * b)) / qmax);
      float m = static_cast<float>(lo * (1.0 - 0.1 * b));
      if (!(s > 0)) s = 1e-8f;
      kernels::RoundGroupParams(&s, &m);
      double err = 0;
      for (int64_t i = 0; i < len; ++i) {
        const double q = std::clamp(std::nearbyint((v[i] - m) / s), 0.0, double(qmax));
        const double d = q * s + m - v[i];
        err += d * d * (wt ? wt[i] : 1.0);
      }
      if (err < best) {
        best = err;
        *scale = s;
        *min = m;
      }
    }
  }
}

inline uint8_t Code(double v, float s, float m, int qmax) {
  return static_cast<uint8_t>(std::clamp(std::nearbyint((v - m) / s), 0.0, double(qmax)));
}

// Runs fn(row_begin, row_end) over [0, rows) on up to `threads` threads.
inline void ParallelRows(int64_t rows, int threads, const std::function<void(int64_t, int64_t)>& fn) {
  int nt = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  nt = static_cast<int>(std::min<int64_t>(nt, rows));
  if (nt <= 1) return fn(0, rows);
  std::vector<std::thread> ts;
  const int64_t per = (rows + nt - 1) / nt;
  for (int i = 0; i < nt; ++i) {
    const int64_t b = i * per, e = std::min(rows, b + per);
    if (b < e) ts.emplace_back(fn, b, e);
  }
  for (auto& t : ts) t.join();
}

// H + damping * mean(diag) * I, with dead inputs (diag 0) set to 1.
inline std::vector<double> DampedH(const std::vector<double>& h, int64_t n, double damping) {
  std::vector<double> d = h;
  double mean = 0;
  for (int64_t i = 0; i < n; ++i) mean += h[i * n + i];
  mean = std::max(mean / n, 1e-12);
  for (int64_t i = 0; i < n; ++i) {
    if (d[i * n + i] <= 0) d[i * n + i] = mean;
    d[i * n + i] += damping * mean;
  }
  return d;
}

}  // namespace compressd::quant_detail
