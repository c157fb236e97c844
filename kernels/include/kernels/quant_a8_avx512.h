// Shared by the A8 kernels (quant_gemm_a8_avx512.cc, quant_gemm_8a8_avx512.cc); include only
// from translation units compiled for AVX-512.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace compressd::kernels::a8 {

// One 32-column chunk of activations (the first `len` <= 32 values of x; the rest read as 0)
// rounded to int8 exactly as quant_internal::QuantizeChunksQ8 defines it: scale = amax / 127,
// q = round-half-even(x * (127 / amax)) clamped to [-127, 127].
struct Chunk {
  __m512i q0, q1;  // values 0..15 and 16..31 as int32
  float scale;
};

inline Chunk QuantizeChunk32(const float* x, int64_t len) {
  const __m512 sign = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  const __m512i lim = _mm512_set1_epi32(127), nlim = _mm512_set1_epi32(-127);
  const __mmask16 m0 = static_cast<__mmask16>(len >= 16 ? 0xffff : (1u << len) - 1u);
  const __mmask16 m1 = static_cast<__mmask16>(len >= 32   ? 0xffff
                                              : len <= 16 ? 0
                                                          : (1u << (len - 16)) - 1u);
  const __m512 x0 = _mm512_maskz_loadu_ps(m0, x);
  const __m512 x1 = _mm512_maskz_loadu_ps(m1, x + 16);
  const float amax =
      _mm512_reduce_max_ps(_mm512_max_ps(_mm512_and_ps(x0, sign), _mm512_and_ps(x1, sign)));
  const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
  const __m512 vinv = _mm512_set1_ps(inv);
  Chunk c;
  c.q0 = _mm512_max_epi32(_mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(x0, vinv)), lim), nlim);
  c.q1 = _mm512_max_epi32(_mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(x1, vinv)), lim), nlim);
  c.scale = amax / 127.0f;  // MXCSR default rounding (RNE) above
  return c;
}

}  // namespace compressd::kernels::a8
