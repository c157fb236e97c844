// AVX-512 register decoders of GGUF Q8_0 / Q4_0 (ggml_quant.h) for the templated engine of
// kernels/sparse_tile_avx512.h: one block of 32 gives two 16-lane vectors.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include "kernels/ggml_quant.h"
#include "kernels/sparse_tile_avx512.h"

namespace compressd::kernels {
namespace {

struct Q8Dec {
  const GgufBlockQ8_0* b;
  int half;
  void Start(const PackedWeight& w, int64_t r, int64_t k0) {
    b = static_cast<const GgufBlockQ8_0*>(w.data) + r * (w.cols / kGgufBlock) + k0 / kGgufBlock;
    half = 0;
  }
  __m512 Next() {
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b->qs + 16 * half));
    const __m512 v = _mm512_mul_ps(_mm512_set1_ps(_cvtsh_ss(b->d)),
                                   _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)));
    if (++half == 2) {
      half = 0;
      ++b;
    }
    return v;
  }
};

struct Q4Dec {
  const GgufBlockQ4_0* b;
  int half;
  void Start(const PackedWeight& w, int64_t r, int64_t k0) {
    b = static_cast<const GgufBlockQ4_0*>(w.data) + r * (w.cols / kGgufBlock) + k0 / kGgufBlock;
    half = 0;
  }
  __m512 Next() {
    __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b->qs));
    if (half) q = _mm_srli_epi16(q, 4);
    q = _mm_and_si128(q, _mm_set1_epi8(0x0f));
    // d * (q - 8) == fma(q, d, -8d) exactly: -8d is exact and the fma rounds once.
    const __m512 d = _mm512_set1_ps(_cvtsh_ss(b->d));
    const __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q)), d,
                                     _mm512_mul_ps(d, _mm512_set1_ps(-8.0f)));
    if (++half == 2) {
      half = 0;
      ++b;
    }
    return v;
  }
};

}  // namespace

void GemmGgufAvx512(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                    int64_t row_begin, int64_t row_end) {
  if (w.format.variant == kGgufVariantQ8_0) {
    return tile512::Gemm<Q8Dec>(w, x, n, y, ldy, row_begin, row_end);
  }
  tile512::Gemm<Q4Dec>(w, x, n, y, ldy, row_begin, row_end);
}

}  // namespace compressd::kernels
