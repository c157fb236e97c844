// AVX-512 register decoders of the sparse formats (layouts in kernels/sparse.h) for the
// templated engine of kernels/sparse_tile_avx512.h. Packed fp16 values are widened 16 at a
// time and scattered to their columns with vexpandps under the bitmap.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include "kernels/sparse.h"
#include "kernels/sparse_tile_avx512.h"

namespace compressd::kernels {
namespace {

int64_t Blocks(int64_t cols) { return (cols + kSparseBlockCols - 1) / kSparseBlockCols; }

struct UnstructuredDec {
  const uint64_t* bm;
  const uint16_t* vp;
  uint64_t bits;
  int piece;
  void Start(const PackedWeight& w, int64_t r, int64_t k0) {
    const int64_t words = (w.cols + 63) / 64;
    bm = static_cast<const uint64_t*>(w.aux[0]) + r * words + k0 / 64;
    vp = static_cast<const uint16_t*>(w.data) +
         static_cast<const uint32_t*>(w.aux[1])[r * (Blocks(w.cols) + 1) + k0 / kSparseBlockCols];
    piece = 0;
    bits = 0;
  }
  __m512 Next() {
    if (piece == 0) bits = *bm++;
    const __mmask16 m = static_cast<__mmask16>(bits >> (16 * piece));
    piece = (piece + 1) & 3;
    const __m512 v = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(vp)));
    vp += __builtin_popcount(m);
    return _mm512_maskz_expand_ps(m, v);
  }
};

// 8-bit mask of two 2:4 groups from their two index nibbles.
struct TwoFourLut {
  uint8_t m[256];
  constexpr TwoFourLut() : m() {
    for (int i = 0; i < 256; ++i) {
      const int a = i & 15, b = i >> 4;
      m[i] = static_cast<uint8_t>(((1 << (a & 3)) | (1 << (a >> 2))) |
                                  (((1 << (b & 3)) | (1 << (b >> 2))) << 4));
    }
  }
};
constexpr TwoFourLut kLut;

struct TwoFourDec {
  const uint16_t* vals;
  const uint16_t* idx;
  void Start(const PackedWeight& w, int64_t r, int64_t k0) {
    const int64_t cp = (w.cols + 15) / 16 * 16;
    vals = static_cast<const uint16_t*>(w.data) + r * (cp / 2) + k0 / 2;
    idx = static_cast<const uint16_t*>(w.aux[0]) + r * (cp / 16) + k0 / 16;
  }
  __m512 Next() {
    const uint16_t i = *idx++;
    const __mmask16 m = static_cast<__mmask16>(kLut.m[i & 0xff] | (kLut.m[i >> 8] << 8));
    const __m256 v8 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(vals)));
    vals += 8;
    return _mm512_maskz_expand_ps(m, _mm512_castps256_ps512(v8));
  }
};

struct GroupDec {
  const uint8_t* data;
  const uint16_t* scales;
  uint64_t bits;
  uint32_t gi;
  bool int4;
  void Start(const PackedWeight& w, int64_t r, int64_t k0) {
    const int64_t ng = (w.cols + 15) / 16, gw = (ng + 63) / 64;
    bits = static_cast<const uint64_t*>(w.aux[0])[r * gw + k0 / kSparseBlockCols];
    gi = static_cast<const uint32_t*>(w.aux[1])[r * (Blocks(w.cols) + 1) + k0 / kSparseBlockCols];
    data = static_cast<const uint8_t*>(w.data);
    scales = static_cast<const uint16_t*>(w.aux[2]);
    int4 = w.format.bits == 4;
  }
  __m512 Next() {
    // Branch-free (kept groups are random): decode at gi either way, mask, advance by kept.
    const uint32_t kept = static_cast<uint32_t>(bits & 1);
    bits >>= 1;
    const __mmask16 m = static_cast<__mmask16>(0u - kept);
    __m512 v;
    if (int4) {
      static const uint16_t kZero = 0;
      const uint16_t* sp = kept ? scales + gi : &kZero;
      const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(data + gi * 8ull));
      const __m128i low = _mm_set1_epi8(0x0f);
      const __m128i codes =
          _mm_unpacklo_epi8(_mm_and_si128(b, low), _mm_and_si128(_mm_srli_epi16(b, 4), low));
      const __m512 q = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(codes));
      // d * (q - 8) == fma(q, d, -8d) exactly: -8d is exact and the fma rounds once.
      const __m512 d = _mm512_set1_ps(_cvtsh_ss(*sp));
      v = _mm512_maskz_fmadd_ps(m, q, d, _mm512_mul_ps(d, _mm512_set1_ps(-8.0f)));
    } else {
      v = _mm512_maskz_mov_ps(m, _mm512_cvtph_ps(_mm256_loadu_si256(
                                     reinterpret_cast<const __m256i*>(data + gi * 32ull))));
    }
    gi += kept;
    return v;
  }
};

}  // namespace

void GemmSparseAvx512(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                      int64_t row_begin, int64_t row_end) {
  switch (w.format.sparsity) {
    case SparsityPattern::kUnstructured:
      return tile512::Gemm<UnstructuredDec>(w, x, n, y, ldy, row_begin, row_end);
    case SparsityPattern::kTwoFour:
      return tile512::Gemm<TwoFourDec>(w, x, n, y, ldy, row_begin, row_end);
    case SparsityPattern::kGroup:
      return tile512::Gemm<GroupDec>(w, x, n, y, ldy, row_begin, row_end);
    default:
      return;
  }
}

}  // namespace compressd::kernels
