// Scalar element-wise ops (the *Ref oracles) and the entry points of ops.h, which dispatch
// on ActiveIsa() to ops_avx2.cc / ops_avx512.cc.
#include <cmath>
#include <limits>

#include "kernels/cpu_features.h"
#include "kernels/ops.h"

namespace compressd::kernels {

void RmsNormRef(const float* x, const float* w, int64_t n, float eps, float* out) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * inv * w[i];
}

void RmsNorm(const float* x, const float* w, int64_t n, float eps, float* out) {
  switch (ActiveIsa()) {
    case CpuIsa::kAvx512:
      return RmsNormAvx512(x, w, n, eps, out);
    case CpuIsa::kAvx2:
      return RmsNormAvx2(x, w, n, eps, out);
    case CpuIsa::kScalar:
      break;
  }
  RmsNormRef(x, w, n, eps, out);
}

void RopeRotateHalfRef(float* v, int n_heads, int head_dim, const float* cos, const float* sin) {
  const int half = head_dim / 2;
  for (int h = 0; h < n_heads; ++h) {
    float* p = v + static_cast<int64_t>(h) * head_dim;
    for (int i = 0; i < half; ++i) {
      const float a = p[i], b = p[i + half];
      p[i] = a * cos[i] - b * sin[i];
      p[i + half] = b * cos[i] + a * sin[i];
    }
  }
}

void RopeRotateHalf(float* v, int n_heads, int head_dim, const float* cos, const float* sin) {
  switch (ActiveIsa()) {
    case CpuIsa::kAvx512:
      return RopeRotateHalfAvx512(v, n_heads, head_dim, cos, sin);
    case CpuIsa::kAvx2:
      return RopeRotateHalfAvx2(v, n_heads, head_dim, cos, sin);
    case CpuIsa::kScalar:
      break;
  }
  RopeRotateHalfRef(v, n_heads, head_dim, cos, sin);
}

void SiluMulRef(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void SiluMul(const float* gate, const float* up, float* out, int64_t n) {
  switch (ActiveIsa()) {
    case CpuIsa::kAvx512:
      return SiluMulAvx512(gate, up, out, n);
    case CpuIsa::kAvx2:
      return SiluMulAvx2(gate, up, out, n);
    case CpuIsa::kScalar:
      break;
  }
  SiluMulRef(gate, up, out, n);
}

void AddInPlaceRef(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void AddInPlace(float* y, const float* x, int64_t n) {
  switch (ActiveIsa()) {
    case CpuIsa::kAvx512:
      return AddInPlaceAvx512(y, x, n);
    case CpuIsa::kAvx2:
      return AddInPlaceAvx2(y, x, n);
    case CpuIsa::kScalar:
      break;
  }
  AddInPlaceRef(y, x, n);
}

void SoftmaxInPlaceRef(float* x, int64_t n) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) mx = x[i] > mx ? x[i] : mx;
  if (!std::isfinite(mx)) {
    for (int64_t i = 0; i < n; ++i) x[i] = 1.0f / static_cast<float>(n);
    return;
  }
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void SoftmaxInPlace(float* x, int64_t n) {
  switch (ActiveIsa()) {
    case CpuIsa::kAvx512:
      return SoftmaxInPlaceAvx512(x, n);
    case CpuIsa::kAvx2:
      return SoftmaxInPlaceAvx2(x, n);
    case CpuIsa::kScalar:
      break;
  }
  SoftmaxInPlaceRef(x, n);
}

float DotRef(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

float Dot(const float* a, const float* b, int64_t n) {
  switch (ActiveIsa()) {
    case CpuIsa::kAvx512:
      return DotAvx512(a, b, n);
    case CpuIsa::kAvx2:
      return DotAvx2(a, b, n);
    case CpuIsa::kScalar:
      break;
  }
  return DotRef(a, b, n);
}

}  // namespace compressd::kernels
