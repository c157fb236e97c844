// AVX-512 AttendDense: one query token per head over a paged dense KV cache (F32/F16/BF16).
//
// Decode attention is bound by reading K and V, so heads that share a KV head (GQA) are
// processed together (up to 4 at a time; 2 in the AVX2 version) and every K/V vector is loaded and
// converted once for all of them. Softmax is computed online over chunks of at most one block (<=
// 64 tokens): running max m, running sum l and an unnormalised output o per head, rescaled by
// e^(m_old - m_new) when the max grows. That needs no scratch per head (the caller's scratch
// holds n_ctx floats, not n_ctx per head) and reads K and V once each.
// Scores for 4 tokens x G heads are 16-lane partial sums reduced with one transpose tree.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/attention.h"
#include "kernels/ops.h"
#include "reduce_avx512_inl.h"

namespace compressd::kernels {

namespace {

using avx512::Reduce4;

constexpr int kMaxGroup = 4;
constexpr int kChunk = 64;
constexpr int kMaxHeadDim = 256;

inline __mmask16 Mask(int rem) {
  return rem >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << rem) - 1u);
}

template <DType D>
inline __m512 LoadKv(const void* row, int d, __mmask16 m) {
  if constexpr (D == DType::kF32) {
    return _mm512_maskz_loadu_ps(m, static_cast<const float*>(row) + d);
  } else if constexpr (D == DType::kF16) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(row) + d));
  } else {
    const __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(row) + d);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
}

inline const void* Row(DType dt, const void* block, int64_t elem) {
  return static_cast<const char*>(block) + elem * DTypeSize(dt);
}

// Prefetches the rows [j, j + 4) of the chunk at base (each head_dim values).
template <DType D>
inline void PrefetchRows(const void* base, int j, int len, int head_dim) {
  const int64_t row_bytes = static_cast<int64_t>(head_dim) * DTypeSize(D);
  const char* p = static_cast<const char*>(base) + j * row_bytes;
  const int64_t n = std::min(4, len - j) * row_bytes;
  for (int64_t off = 0; off < n; off += 64) _mm_prefetch(p + off, _MM_HINT_T0);
}

// s[g][j] = scale * q_g . K_j for the chunk's tokens (rows of stride head_dim from k0).
// The KV cache of a step's batch is larger than the caches: the chunk's V rows (v0) and the K
// rows 8 tokens ahead are prefetched while the scores are computed, so that neither the next
// K rows nor AccumulateV's first pass over V wait on DRAM.
template <DType D, int G>
void Scores(const float* const* q, const void* k0, const void* v0, int len, int head_dim,
            float scale, float (*s)[kChunk]) {
  const __m128 vscale = _mm_set1_ps(scale);
  for (int j = 0; j < len; j += 4) {
    if (j + 8 < len) PrefetchRows<D>(k0, j + 8, len, head_dim);
    PrefetchRows<D>(v0, j, len, head_dim);
    // Rows past the chunk end repeat its last row; their scores are not stored.
    const void* rows[4];
    for (int i = 0; i < 4; ++i)
      rows[i] = Row(D, k0, static_cast<int64_t>(std::min(j + i, len - 1)) * head_dim);
    __m512 acc[G][4];
    for (int g = 0; g < G; ++g) {
      for (int i = 0; i < 4; ++i) acc[g][i] = _mm512_setzero_ps();
    }
    for (int d = 0; d < head_dim; d += 16) {
      const __mmask16 m = Mask(head_dim - d);
      __m512 qv[G];
      for (int g = 0; g < G; ++g) qv[g] = _mm512_maskz_loadu_ps(m, q[g] + d);
      for (int i = 0; i < 4; ++i) {
        const __m512 kv = LoadKv<D>(rows[i], d, m);
        for (int g = 0; g < G; ++g) acc[g][i] = _mm512_fmadd_ps(kv, qv[g], acc[g][i]);
      }
    }
    for (int g = 0; g < G; ++g) {
      const __m128 r = _mm_mul_ps(Reduce4(acc[g][0], acc[g][1], acc[g][2], acc[g][3]), vscale);
      alignas(16) float tmp[4];
      _mm_store_ps(tmp, r);
      for (int i = 0; i < 4 && j + i < len; ++i) s[g][j + i] = tmp[i];
    }
  }
}

// o[g] += sum_j p[g][j] * V_j over the chunk.
template <DType D, int G>
void AccumulateV(const void* v0, int len, int head_dim, float (*p)[kChunk],
                 float (*o)[kMaxHeadDim]) {
  for (int d = 0; d < head_dim; d += 16) {
    const __mmask16 m = Mask(head_dim - d);
    __m512 acc[G];
    for (int g = 0; g < G; ++g) acc[g] = _mm512_maskz_loadu_ps(m, o[g] + d);
    for (int j = 0; j < len; ++j) {
      const __m512 vv = LoadKv<D>(Row(D, v0, static_cast<int64_t>(j) * head_dim), d, m);
      for (int g = 0; g < G; ++g) acc[g] = _mm512_fmadd_ps(_mm512_set1_ps(p[g][j]), vv, acc[g]);
    }
    for (int g = 0; g < G; ++g) _mm512_mask_storeu_ps(o[g] + d, m, acc[g]);
  }
}

template <DType D, int G>
void AttendGroup(const DenseKvLayout& l, const float* q, int h0, int kvh,
                 const void* const* k_blocks, const void* const* v_blocks, int n_ctx, float scale,
                 float* out) {
  const int hd = l.head_dim;
  const float* qs[G];
  for (int g = 0; g < G; ++g) qs[g] = q + static_cast<int64_t>(h0 + g) * hd;
  alignas(64) float o[G][kMaxHeadDim] = {};
  alignas(64) float s[G][kChunk];
  float m[G], sum[G];
  for (int g = 0; g < G; ++g) m[g] = -INFINITY, sum[g] = 0.0f;

  for (int t = 0; t < n_ctx;) {
    const int block = t / l.block_size, slot = t % l.block_size;
    const int len = std::min({kChunk, l.block_size - slot, n_ctx - t});
    const int64_t base = (static_cast<int64_t>(kvh) * l.block_size + slot) * hd;
    Scores<D, G>(qs, Row(D, k_blocks[block], base), Row(D, v_blocks[block], base), len, hd,
                 scale, s);
    for (int g = 0; g < G; ++g) {
      float mx = m[g];
      for (int j = 0; j < len; ++j) mx = std::max(mx, s[g][j]);
      const float corr = std::exp(m[g] - mx);  // 0 on the first chunk (m = -inf)
      for (int j = 0; j < len; ++j) s[g][j] -= mx;
      ExpAvx512(s[g], s[g], len);
      float chunk_sum = 0.0f;
      for (int j = 0; j < len; ++j) chunk_sum += s[g][j];
      sum[g] = sum[g] * corr + chunk_sum;
      m[g] = mx;
      if (corr != 1.0f) {
        for (int d = 0; d < hd; ++d) o[g][d] *= corr;
      }
    }
    if (t + len < n_ctx) {  // the next chunk's first K rows, while V is accumulated
      const int nt = t + len, nb = nt / l.block_size, ns = nt % l.block_size;
      const int64_t nbase = (static_cast<int64_t>(kvh) * l.block_size + ns) * hd;
      const int nlen = std::min({kChunk, l.block_size - ns, n_ctx - nt});
      PrefetchRows<D>(Row(D, k_blocks[nb], nbase), 0, nlen, hd);
      PrefetchRows<D>(Row(D, k_blocks[nb], nbase), 4, nlen, hd);
    }
    AccumulateV<D, G>(Row(D, v_blocks[block], base), len, hd, s, o);
    t += len;
  }
  for (int g = 0; g < G; ++g) {
    float* oh = out + static_cast<int64_t>(h0 + g) * hd;
    const float inv = 1.0f / sum[g];
    for (int d = 0; d < hd; ++d) oh[d] = o[g][d] * inv;
  }
}

template <DType D>
void AttendGroupN(int g, const DenseKvLayout& l, const float* q, int h0, int kvh,
                  const void* const* k_blocks, const void* const* v_blocks, int n_ctx, float scale,
                  float* out) {
  switch (g) {
    case 1:
      return AttendGroup<D, 1>(l, q, h0, kvh, k_blocks, v_blocks, n_ctx, scale, out);
    case 2:
      return AttendGroup<D, 2>(l, q, h0, kvh, k_blocks, v_blocks, n_ctx, scale, out);
    case 3:
      return AttendGroup<D, 3>(l, q, h0, kvh, k_blocks, v_blocks, n_ctx, scale, out);
    default:
      return AttendGroup<D, 4>(l, q, h0, kvh, k_blocks, v_blocks, n_ctx, scale, out);
  }
}

}  // namespace

void AttendDenseRef(const DenseKvLayout& layout, int n_heads, const float* q,
                    const void* const* k_blocks, const void* const* v_blocks, int n_ctx,
                    float scale, float* out, float* scratch, int head_begin, int head_end);

void AttendDenseAvx512(const DenseKvLayout& l, int n_heads, const float* q,
                       const void* const* k_blocks, const void* const* v_blocks, int n_ctx,
                       float scale, float* out, float* scratch, int head_begin, int head_end) {
  if (l.head_dim > kMaxHeadDim || n_ctx <= 0 || l.block_size <= 0) {
    // Outside the shapes this kernel is sized for: the reference is always right.
    return AttendDenseRef(l, n_heads, q, k_blocks, v_blocks, n_ctx, scale, out, scratch, head_begin,
                          head_end);
  }
  const int group = n_heads / l.n_kv_heads;
  for (int h = head_begin; h < head_end;) {
    const int kvh = h / group;
    const int g = std::min({kMaxGroup, head_end - h, (kvh + 1) * group - h});
    switch (l.dtype) {
      case DType::kF16:
        AttendGroupN<DType::kF16>(g, l, q, h, kvh, k_blocks, v_blocks, n_ctx, scale, out);
        break;
      case DType::kBF16:
        AttendGroupN<DType::kBF16>(g, l, q, h, kvh, k_blocks, v_blocks, n_ctx, scale, out);
        break;
      default:
        AttendGroupN<DType::kF32>(g, l, q, h, kvh, k_blocks, v_blocks, n_ctx, scale, out);
        break;
    }
    h += g;
  }
}

namespace {

// n (<= 16) floats -> n F16/BF16/F32 values at dst, rounding as F32ToF16 / F32ToBF16 do.
template <DType D>
inline void StoreRow16(const float* src, void* dst, int n) {
  const __mmask16 m = Mask(n);
  const __m512 x = _mm512_maskz_loadu_ps(m, src);
  if constexpr (D == DType::kF32) {
    _mm512_mask_storeu_ps(dst, m, x);
  } else if constexpr (D == DType::kF16) {
    const __m256i h = _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm256_mask_storeu_epi16(dst, m, h);
  } else {
    // Integer round-to-nearest-even on the bit pattern (vcvtneps2bf16 would flush subnormal
    // inputs to zero); NaNs are kept quiet, as in F32ToBF16.
    const __m512i u = _mm512_castps_si512(x);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb)), 16);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(
        _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
    _mm256_mask_storeu_epi16(dst, m, _mm512_cvtepi32_epi16(r));
  }
}

template <DType D>
void StoreKvAs(const DenseKvLayout& l, void* k_block, void* v_block, int slot, const float* k,
               const float* v) {
  const int64_t esize = D == DType::kF32 ? 4 : 2;
  for (int h = 0; h < l.n_kv_heads; ++h) {
    const int64_t base = (static_cast<int64_t>(h) * l.block_size + slot) * l.head_dim;
    for (int d = 0; d < l.head_dim; d += 16) {
      const int n = std::min(16, l.head_dim - d);
      StoreRow16<D>(k + h * l.head_dim + d, static_cast<char*>(k_block) + (base + d) * esize, n);
      StoreRow16<D>(v + h * l.head_dim + d, static_cast<char*>(v_block) + (base + d) * esize, n);
    }
  }
}

}  // namespace

void StoreDenseKvAvx512(const DenseKvLayout& l, void* k_block, void* v_block, int slot,
                        const float* k, const float* v) {
  switch (l.dtype) {
    case DType::kF16: return StoreKvAs<DType::kF16>(l, k_block, v_block, slot, k, v);
    case DType::kBF16: return StoreKvAs<DType::kBF16>(l, k_block, v_block, slot, k, v);
    case DType::kF32: return StoreKvAs<DType::kF32>(l, k_block, v_block, slot, k, v);
    default: return StoreDenseKvRef(l, k_block, v_block, slot, k, v);
  }
}

}  // namespace compressd::kernels
