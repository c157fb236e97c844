// AVX2/FMA dense GEMM (F32/F16/BF16 weights, fp32 activations). Placeholder loop until the
// tuned kernel lands; correctness is covered by the parity test against GemmDenseRef.
#include <immintrin.h>

#include "kernels/gemm.h"

namespace compressd::kernels {
namespace {

inline __m256 Load8(DType t, const void* base, int64_t i) {
  switch (t) {
    case DType::kF16:
      return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(
          static_cast<const uint16_t*>(base) + i)));
    case DType::kBF16: {
      __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + i));
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    default:
      return _mm256_loadu_ps(static_cast<const float*>(base) + i);
  }
}

inline float Hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_hadd_ps(lo, lo);
  lo = _mm_hadd_ps(lo, lo);
  return _mm_cvtss_f32(lo);
}

inline float Scalar(DType t, const void* base, int64_t i) {
  switch (t) {
    case DType::kF16: return F16ToF32(static_cast<const uint16_t*>(base)[i]);
    case DType::kBF16: return BF16ToF32(static_cast<const uint16_t*>(base)[i]);
    default: return static_cast<const float*>(base)[i];
  }
}

}  // namespace

void GemmDenseAvx2(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                   int64_t row_begin, int64_t row_end) {
  const DType dt = w.format.dtype;
  const int64_t K = w.cols;
  const int64_t K8 = K & ~int64_t{7};
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int64_t row_off = r * K;
    for (int64_t t = 0; t < n; ++t) {
      const float* xt = x + t * K;
      __m256 acc = _mm256_setzero_ps();
      for (int64_t c = 0; c < K8; c += 8) {
        acc = _mm256_fmadd_ps(Load8(dt, w.data, row_off + c), _mm256_loadu_ps(xt + c), acc);
      }
      float s = Hsum(acc);
      for (int64_t c = K8; c < K; ++c) s += Scalar(dt, w.data, row_off + c) * xt[c];
      y[t * ldy + r] = s;
    }
  }
}

}  // namespace compressd::kernels
