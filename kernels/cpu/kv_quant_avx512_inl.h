// Building blocks of the AVX-512 KIVI attention kernels (kv_quant_avx512.cc: base blocks;
// kv_mixed_avx512.cc: tables that mix base and demoted blocks). Internal to kernels/cpu/;
// include only from files compiled with AVX-512 F/BW/VL/DQ.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "reduce_avx512_inl.h"

namespace compressd::kernels::kv_avx512 {

using avx512::Reduce4;  // sums of a, b, c, d in lanes 0..3

constexpr int kMaxGroup = 4;
constexpr int kMaxBlock = 256;
constexpr int kMaxHeadDim = 256;

enum class Row : int { kF16 = 0, kQ2 = 2, kQ4 = 4, kQ8 = 8 };

// 16 channels starting at chunk `c` (index of the 16-channel chunk) of one row.
template <Row R>
inline __m512 Load16(const uint8_t* row, int c) {
  if constexpr (R == Row::kF16) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + c * 32)));
  } else if constexpr (R == Row::kQ8) {
    return _mm512_cvtepi32_ps(
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c * 16))));
  } else if constexpr (R == Row::kQ4) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + c * 8));
    const __m128i m = _mm_set1_epi8(0x0f);
    const __m128i x = _mm_unpacklo_epi64(_mm_and_si128(b, m), _mm_and_si128(_mm_srli_epi16(b, 4), m));
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(x));
  } else {
    uint32_t u;
    std::memcpy(&u, row + c * 4, 4);
    const __m128i b = _mm_cvtsi32_si128(static_cast<int>(u));
    const __m128i m = _mm_set1_epi8(0x03);
    const __m128i c0 = _mm_and_si128(b, m), c1 = _mm_and_si128(_mm_srli_epi16(b, 2), m);
    const __m128i c2 = _mm_and_si128(_mm_srli_epi16(b, 4), m), c3 = _mm_and_si128(_mm_srli_epi16(b, 6), m);
    const __m128i x = _mm_unpacklo_epi64(_mm_unpacklo_epi32(c0, c1), _mm_unpacklo_epi32(c2, c3));
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(x));
  }
}

// s[g][j] = cst[g] + qs[g] . row_j for j < len (rows of row_bytes from r0).
template <Row R, int G>
void Scores(const float (*qs)[kMaxHeadDim], const float* cst, const uint8_t* r0, size_t row_bytes,
            int len, int n_chunks, float (*s)[kMaxBlock]) {
  for (int j = 0; j < len; j += 4) {
    const uint8_t* rows[4];
    for (int i = 0; i < 4; ++i) rows[i] = r0 + row_bytes * std::min(j + i, len - 1);
    __m512 acc[G][4];
    for (int g = 0; g < G; ++g) {
      for (int i = 0; i < 4; ++i) acc[g][i] = _mm512_setzero_ps();
    }
    for (int c = 0; c < n_chunks; ++c) {
      __m512 qv[G];
      for (int g = 0; g < G; ++g) qv[g] = _mm512_load_ps(qs[g] + 16 * c);
      for (int i = 0; i < 4; ++i) {
        const __m512 kv = Load16<R>(rows[i], c);
        for (int g = 0; g < G; ++g) acc[g][i] = _mm512_fmadd_ps(kv, qv[g], acc[g][i]);
      }
    }
    for (int g = 0; g < G; ++g) {
      alignas(16) float tmp[4];
      _mm_store_ps(tmp, _mm_add_ps(Reduce4(acc[g][0], acc[g][1], acc[g][2], acc[g][3]),
                                   _mm_set1_ps(cst[g])));
      for (int i = 0; i < 4 && j + i < len; ++i) s[g][j + i] = tmp[i];
    }
  }
}

// o[g][d] += sum_j w_g(j, group of d) * row_j[d] (+ the per-group offsets, added by the caller).
// vsf: per token per group weight factor (1 for fp16 rows), stride ng.
template <Row R, int G>
void AccumulateV(const uint8_t* r0, size_t row_bytes, int len, int n_chunks, int chunks_per_group,
                 int ng, const float* vsf, float (*p)[kMaxBlock], float (*o)[kMaxHeadDim]) {
  for (int c = 0; c < n_chunks; ++c) {
    const int grp = c / chunks_per_group;
    __m512 acc[G];
    for (int g = 0; g < G; ++g) acc[g] = _mm512_load_ps(o[g] + 16 * c);
    for (int j = 0; j < len; ++j) {
      const __m512 vv = Load16<R>(r0 + row_bytes * j, c);
      const float f = vsf != nullptr ? vsf[j * ng + grp] : 1.0f;
      for (int g = 0; g < G; ++g) acc[g] = _mm512_fmadd_ps(_mm512_set1_ps(p[g][j] * f), vv, acc[g]);
    }
    for (int g = 0; g < G; ++g) _mm512_store_ps(o[g] + 16 * c, acc[g]);
  }
}

}  // namespace compressd::kernels::kv_avx512
