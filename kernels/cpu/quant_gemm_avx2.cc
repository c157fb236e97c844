// AVX2 path of the quantized formats: each row is decoded once into an fp32 row buffer
// (L1-resident) and then dotted with every token using 8-lane FMAs; W8A8/LLM.int8 use
// 16-bit widening multiply-adds (vpmaddwd), which are exact.
// Batch invariance: one accumulator chain per (row, token), same order for every n.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/quant.h"

namespace compressd::kernels {
namespace {

using namespace quant_internal;

inline float HSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline int32_t HSumI(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

void DecodeRow(const PackedWeight& w, int64_t r, int64_t cp, float* s, float* m, float* row) {
  const WeightFormat& f = w.format;
  if (static_cast<QuantVariant>(f.variant) == QuantVariant::kInt8Row) {
    const auto* q = static_cast<const int8_t*>(w.data) + r * cp;
    for (int64_t c = 0; c < cp; c += 8) {
      const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + c));
      _mm256_storeu_ps(row + c, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)));
    }
    return;
  }
  const int64_t g = f.group_size;
  RowGroupParams(w, r, s, m);
  const RowView rv = RowCodes(w, r);
  alignas(32) uint8_t q[32];
  for (int64_t c = 0; c < cp; c += kQuantChunk) {
    UnpackChunk(rv.codes + c / kQuantChunk * ChunkBytes(rv.bits), rv.bits, q);
    for (int h = 0; h < 4; ++h) {
      const int64_t gi = (c + 8 * h) / g;
      const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + 8 * h));
      const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b));
      _mm256_storeu_ps(row + c + 8 * h,
                       _mm256_fmadd_ps(v, _mm256_set1_ps(s[gi]), _mm256_set1_ps(m[gi])));
    }
  }
}

void GemmFloat(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
               int64_t row_begin, int64_t row_end) {
  const WeightFormat& f = w.format;
  const int64_t cols = w.cols, cp = QuantPaddedCols(f, cols);
  const bool int8row = static_cast<QuantVariant>(f.variant) == QuantVariant::kInt8Row;
  const int64_t ng = int8row ? 1 : cp / f.group_size;
  thread_local std::vector<float> row, s, m, xbuf;
  row.resize(static_cast<size_t>(cp));
  s.resize(static_cast<size_t>(ng));
  m.resize(static_cast<size_t>(ng));
  const float* xp = x;
  if (cols != cp) {
    xbuf.assign(static_cast<size_t>(n * cp), 0.0f);
    for (int64_t t = 0; t < n; ++t) std::memcpy(xbuf.data() + t * cp, x + t * cols, cols * 4);
    xp = xbuf.data();
  }
  const auto* row_scale = int8row ? static_cast<const float*>(w.aux[0]) : nullptr;
  for (int64_t r = row_begin; r < row_end; ++r) {
    DecodeRow(w, r, cp, s.data(), m.data(), row.data());
    for (int64_t t = 0; t < n; ++t) {
      const float* xt = xp + t * cp;
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
      for (int64_t c = 0; c < cp; c += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(row.data() + c), _mm256_loadu_ps(xt + c), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(row.data() + c + 8), _mm256_loadu_ps(xt + c + 8), a1);
      }
      const float d = HSum(_mm256_add_ps(a0, a1));
      y[t * ldy + r] = row_scale ? d * row_scale[r] : d;
    }
    AddRowCorrections(w, r, x, cols, n, y, ldy);
  }
}

void GemmW8A8(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
              int64_t row_begin, int64_t row_end) {
  const auto v = static_cast<QuantVariant>(w.format.variant);
  const int64_t cols = w.cols, cp = QuantPaddedCols(w.format, cols);
  const int64_t n_out = v == QuantVariant::kLlmInt8 ? static_cast<int64_t>(w.aux_bytes[2] / 4) : 0;
  const auto* ids = n_out ? static_cast<const uint32_t*>(w.aux[2]) : nullptr;
  thread_local std::vector<uint8_t> xq;
  thread_local std::vector<float> xs;
  xq.resize(static_cast<size_t>(n * cp));
  xs.resize(static_cast<size_t>(n));
  QuantizeActivations(x, n, cols, cp, ids, n_out, xq.data(), xs.data());
  const auto* q = static_cast<const int8_t*>(w.data);
  const auto* sc = static_cast<const float*>(w.aux[0]);
  const auto* sums = static_cast<const int32_t*>(w.aux[1]);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int8_t* wr = q + r * cp;
    for (int64_t t = 0; t < n; ++t) {
      const uint8_t* xt = xq.data() + t * cp;
      __m256i acc = _mm256_setzero_si256();
      for (int64_t c = 0; c < cp; c += 16) {
        const __m256i xa = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(xt + c)));
        const __m256i wa = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wr + c)));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(xa, wa));
      }
      const int32_t dot = HSumI(acc) - 128 * sums[r];
      y[t * ldy + r] = static_cast<float>(dot) * (xs[t] * sc[r]);
    }
    AddRowCorrections(w, r, x, cols, n, y, ldy);
  }
}

}  // namespace

void GemmQuantAvx2(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                   int64_t row_begin, int64_t row_end) {
  if (n <= 0 || row_begin >= row_end) return;
  const auto v = static_cast<QuantVariant>(w.format.variant);
  if (v == QuantVariant::kW8A8 || v == QuantVariant::kLlmInt8) {
    return GemmW8A8(w, x, n, y, ldy, row_begin, row_end);
  }
  GemmFloat(w, x, n, y, ldy, row_begin, row_end);
}

}  // namespace compressd::kernels
