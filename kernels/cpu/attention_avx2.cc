// AVX2 AttendDense: one query token per head over a paged dense KV cache (F32/F16/BF16).
//
// Decode attention is bound by reading K and V, so heads that share a KV head (GQA) are
// processed together (up to 4 at a time; 2 in the AVX2 version) and every K/V vector is loaded and
// converted once for all of them. Softmax is computed online over chunks of at most one block (<=
// 64 tokens): running max m, running sum l and an unnormalised output o per head, rescaled by
// e^(m_old - m_new) when the max grows. That needs no scratch per head (the caller's scratch
// holds n_ctx floats, not n_ctx per head) and reads K and V once each.
// Same structure as attention_avx512.cc with 8-lane vectors; head_dim tails (head_dim % 8)
// go through a zero-padded buffer.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/attention.h"
#include "kernels/ops.h"

namespace compressd::kernels {


namespace {

// 4 tokens x 2 heads of accumulators + K + q fit in 16 ymm; 4 heads would spill.
constexpr int kMaxGroup = 2;
constexpr int kChunk = 64;
constexpr int kMaxHeadDim = 256;

template <DType D>
inline float LoadScalar(const void* row, int d) {
  if constexpr (D == DType::kF32) {
    return static_cast<const float*>(row)[d];
  } else if constexpr (D == DType::kF16) {
    return F16ToF32(static_cast<const uint16_t*>(row)[d]);
  } else {
    return BF16ToF32(static_cast<const uint16_t*>(row)[d]);
  }
}

// 8 elements from d of a K/V row; rem < 8 loads rem of them and zero-fills the rest.
template <DType D>
inline __m256 LoadKv(const void* row, int d, int rem) {
  if (rem < 8) {
    alignas(32) float buf[8];
    for (int i = 0; i < 8; ++i) buf[i] = i < rem ? LoadScalar<D>(row, d + i) : 0.0f;
    return _mm256_load_ps(buf);
  }
  if constexpr (D == DType::kF32) {
    return _mm256_loadu_ps(static_cast<const float*>(row) + d);
  } else if constexpr (D == DType::kF16) {
    return _mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(row) + d)));
  } else {
    const __m128i h =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(row) + d));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

inline __m256 LoadQ(const float* q, int d, int rem) { return LoadKv<DType::kF32>(q, d, rem); }

inline __m128 Reduce4(__m256 a, __m256 b, __m256 c, __m256 d) {
  const __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
  return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

inline const void* Row(DType dt, const void* block, int64_t elem) {
  return static_cast<const char*>(block) + elem * DTypeSize(dt);
}

// s[g][j] = scale * q_g . K_j for the chunk's tokens (rows of stride head_dim from k0).
template <DType D, int G>
void Scores(const float* const* q, const void* k0, int len, int head_dim, float scale,
            float (*s)[kChunk]) {
  const __m128 vscale = _mm_set1_ps(scale);
  for (int j = 0; j < len; j += 4) {
    // Rows past the chunk end repeat its last row; their scores are not stored.
    const void* rows[4];
    for (int i = 0; i < 4; ++i)
      rows[i] = Row(D, k0, static_cast<int64_t>(std::min(j + i, len - 1)) * head_dim);
    __m256 acc[G][4];
    for (int g = 0; g < G; ++g) {
      for (int i = 0; i < 4; ++i) acc[g][i] = _mm256_setzero_ps();
    }
    for (int d = 0; d < head_dim; d += 8) {
      const int rem = head_dim - d;
      for (int i = 0; i < 4; ++i) {
        const __m256 kv = LoadKv<D>(rows[i], d, rem);
        for (int g = 0; g < G; ++g) acc[g][i] = _mm256_fmadd_ps(kv, LoadQ(q[g], d, rem), acc[g][i]);
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
  // o rows are kMaxHeadDim long, so full 8-wide loads and stores of o stay inside them;
  // lanes past head_dim only ever accumulate zeros from the padded V loads.
  for (int d = 0; d < head_dim; d += 8) {
    const int rem = head_dim - d;
    __m256 acc[G];
    for (int g = 0; g < G; ++g) acc[g] = _mm256_loadu_ps(o[g] + d);
    for (int j = 0; j < len; ++j) {
      const __m256 vv = LoadKv<D>(Row(D, v0, static_cast<int64_t>(j) * head_dim), d, rem);
      for (int g = 0; g < G; ++g) {
        acc[g] = _mm256_fmadd_ps(_mm256_broadcast_ss(&p[g][j]), vv, acc[g]);
      }
    }
    for (int g = 0; g < G; ++g) _mm256_storeu_ps(o[g] + d, acc[g]);
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
    Scores<D, G>(qs, Row(D, k_blocks[block], base), len, hd, scale, s);
    for (int g = 0; g < G; ++g) {
      float mx = m[g];
      for (int j = 0; j < len; ++j) mx = std::max(mx, s[g][j]);
      const float corr = std::exp(m[g] - mx);  // 0 on the first chunk (m = -inf)
      for (int j = 0; j < len; ++j) s[g][j] -= mx;
      ExpAvx2(s[g], s[g], len);
      float chunk_sum = 0.0f;
      for (int j = 0; j < len; ++j) chunk_sum += s[g][j];
      sum[g] = sum[g] * corr + chunk_sum;
      m[g] = mx;
      if (corr != 1.0f) {
        for (int d = 0; d < hd; ++d) o[g][d] *= corr;
      }
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

void AttendDenseAvx2(const DenseKvLayout& l, int n_heads, const float* q,
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

}  // namespace compressd::kernels
