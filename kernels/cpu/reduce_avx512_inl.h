// Horizontal sums of zmm accumulators shared by the AVX-512 kernels (dense GEMM, attention,
// KV codecs). Include only from files compiled with AVX-512 F/DQ.
#pragma once

#include <immintrin.h>

namespace compressd::kernels::avx512 {

// [sum(a), sum(b), sum(c), sum(d)]: one transpose-and-add tree instead of four reductions.
inline __m128 Reduce4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
  const __m256 b8 = _mm256_add_ps(_mm512_castps512_ps256(b), _mm512_extractf32x8_ps(b, 1));
  const __m256 c8 = _mm256_add_ps(_mm512_castps512_ps256(c), _mm512_extractf32x8_ps(c, 1));
  const __m256 d8 = _mm256_add_ps(_mm512_castps512_ps256(d), _mm512_extractf32x8_ps(d, 1));
  const __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a8, b8), _mm256_hadd_ps(c8, d8));
  return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

// sum(a) with exactly the tree Reduce4 uses for each of its inputs, so that a row's result does
// not depend on whether it ran in a 4-row tile or in a 1- or 2-row remainder (i.e. on the row
// range a thread was given).
inline float Reduce1(__m512 a) {
  const __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
  const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a8, a8), _mm256_hadd_ps(a8, a8));
  return _mm_cvtss_f32(_mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
}

}  // namespace compressd::kernels::avx512
