// AVX2/FMA dense GEMM y[t][r] = sum_c W[r][c] * x[t][c] for F32/F16/BF16 weights, fp32
// activations and fp32 accumulation. Same blocking as gemm_dense_avx512.cc, sized for 16
// ymm registers:
// - n == 1 (decode, memory bound): 8 rows x 1 token, 8 independent FMA chains / streams.
// - n >= 2: 4 rows x 2 tokens (8 accumulators + 2 x vectors + 1 weight = 11 ymm); every
//   converted weight vector is used twice.
// - large n: token blocks x col blocks so activations stay in L2 and the 4 weight rows of
//   the current group stay in L1 while all token pairs of the block pass over them.
// Column tails (cols % 8) go through a zero-padded 8-wide buffer converted by the scalar
// exact conversions in types.h, so no load reads past the end of a row.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "kernels/gemm.h"

namespace compressd::kernels {
namespace {

// 64 tokens x 1024 columns of fp32 activations (256 KiB) stay in L2; a 4 x 1024 fp32 weight
// tile (16 KiB) stays in L1.
constexpr int64_t kTokenBlock = 64;
constexpr int64_t kColBlock = 1024;

template <DType D>
inline __m256 LoadW(const void* base, int64_t i) {
  if constexpr (D == DType::kF32) {
    return _mm256_loadu_ps(static_cast<const float*>(base) + i);
  } else if constexpr (D == DType::kF16) {
    return _mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + i)));
  } else {
    const __m128i h =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

template <DType D>
inline float LoadScalar(const void* base, int64_t i) {
  if constexpr (D == DType::kF32) {
    return static_cast<const float*>(base)[i];
  } else if constexpr (D == DType::kF16) {
    return F16ToF32(static_cast<const uint16_t*>(base)[i]);
  } else {
    return BF16ToF32(static_cast<const uint16_t*>(base)[i]);
  }
}

// [sum(a), sum(b), sum(c), sum(d)] with one hadd tree.
inline __m128 Reduce4(__m256 a, __m256 b, __m256 c, __m256 d) {
  const __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
  return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

// sum(a) with exactly the tree Reduce4 uses for each input, so a row's result does not
// depend on whether it ran in a 4-row tile or in a remainder (on the row range it was given).
inline float Reduce1(__m256 a) {
  const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a, a), _mm256_hadd_ps(a, a));
  return _mm_cvtss_f32(_mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
}

struct Tile {
  const void* w;   // element (r0, k0) of the weights (dtype D)
  int64_t ldw;     // elements between weight rows
  const float* x;  // element (t0, k0) of the activations
  int64_t ldx;     // floats between tokens
  float* y;        // y + t0 * ldy + r0
  int64_t ldy;
  int64_t len;      // columns in this block
  bool accumulate;  // add to y (later column blocks) instead of overwriting it
};

// Columns are summed in blocks of kColBlock, each reduced and added to y in order: the same
// sequence for one long row (decode) as for column blocks (batches), so results do not
// depend on the batch size.
template <DType D, int R, int T>
void Micro(const Tile& p) {
  const float* xs[T];
  for (int t = 0; t < T; ++t) xs[t] = p.x + t * p.ldx;
  int64_t wrow[R];
  for (int r = 0; r < R; ++r) wrow[r] = r * p.ldw;

  for (int64_t k0 = 0; k0 < p.len; k0 += kColBlock) {
    const int64_t kend = std::min(p.len, k0 + kColBlock);
    __m256 acc[R][T];
    for (int r = 0; r < R; ++r) {
      for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
    }
    int64_t k = k0;
    for (; k + 8 <= kend; k += 8) {
      __m256 xv[T];
      for (int t = 0; t < T; ++t) xv[t] = _mm256_loadu_ps(xs[t] + k);
      for (int r = 0; r < R; ++r) {
        const __m256 wv = LoadW<D>(p.w, wrow[r] + k);
        for (int t = 0; t < T; ++t) acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
      }
    }
    if (k < kend) {
      const int64_t rem = kend - k;
      alignas(32) float buf[8];
      __m256 xv[T];
      for (int t = 0; t < T; ++t) {
        for (int i = 0; i < 8; ++i) buf[i] = i < rem ? xs[t][k + i] : 0.0f;
        xv[t] = _mm256_load_ps(buf);
      }
      for (int r = 0; r < R; ++r) {
        for (int i = 0; i < 8; ++i) buf[i] = i < rem ? LoadScalar<D>(p.w, wrow[r] + k + i) : 0.0f;
        const __m256 wv = _mm256_load_ps(buf);
        for (int t = 0; t < T; ++t) acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
      }
    }
    const bool add = p.accumulate || k0 > 0;
    for (int t = 0; t < T; ++t) {
      float* yt = p.y + t * p.ldy;
      if constexpr (R % 4 == 0) {
        for (int r = 0; r < R; r += 4) {
          __m128 s = Reduce4(acc[r][t], acc[r + 1][t], acc[r + 2][t], acc[r + 3][t]);
          if (add) s = _mm_add_ps(s, _mm_loadu_ps(yt + r));
          _mm_storeu_ps(yt + r, s);
        }
      } else {
        for (int r = 0; r < R; ++r) {
          const float s = Reduce1(acc[r][t]);
          yt[r] = add ? yt[r] + s : s;
        }
      }
    }
  }
}

template <DType D>
inline const void* Offset(const void* base, int64_t elems) {
  return static_cast<const char*>(base) + elems * (D == DType::kF32 ? 4 : 2);
}

// Runs `rows` rows starting at p.w / p.y for t_count (1 or 2) tokens.
template <DType D>
void RowSweep(Tile p, int64_t rows, int64_t t_count) {
  const void* const w0 = p.w;
  float* const y0 = p.y;
  int64_t r = 0;
  auto run = [&](int nr) {
    p.w = Offset<D>(w0, r * p.ldw);
    p.y = y0 + r;
    if (t_count == 1) {
      switch (nr) {
        case 8:
          Micro<D, 8, 1>(p);
          break;
        case 4:
          Micro<D, 4, 1>(p);
          break;
        case 2:
          Micro<D, 2, 1>(p);
          break;
        default:
          Micro<D, 1, 1>(p);
          break;
      }
    } else {
      switch (nr) {
        case 4:
          Micro<D, 4, 2>(p);
          break;
        case 2:
          Micro<D, 2, 2>(p);
          break;
        default:
          Micro<D, 1, 2>(p);
          break;
      }
    }
    r += nr;
  };
  if (t_count == 1) {
    while (r + 8 <= rows) run(8);
  }
  while (r + 4 <= rows) run(4);
  if (r + 2 <= rows) run(2);
  if (r < rows) run(1);
}

// Converts rows x len weights (row stride ldw) to fp32 at dst (row stride len).
template <DType D>
void ConvertRows(const void* src, int64_t ldw, int64_t rows, int64_t len, float* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    const void* s = Offset<D>(src, r * ldw);
    float* d = dst + r * len;
    int64_t k = 0;
    for (; k + 8 <= len; k += 8) _mm256_storeu_ps(d + k, LoadW<D>(s, k));
    for (; k < len; ++k) d[k] = LoadScalar<D>(s, k);
  }
}

template <DType D>
void GemmDense(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
               int64_t row_begin, int64_t row_end) {
  const int64_t K = w.cols;
  if (n <= 0 || row_end <= row_begin) return;
  if (K == 0) {
    for (int64_t t = 0; t < n; ++t) std::fill(y + t * ldy + row_begin, y + t * ldy + row_end, 0.f);
    return;
  }
  Tile p;
  p.ldw = K;
  p.ldx = K;
  p.ldy = ldy;
  if (n == 1) {  // decode: a single pass streams every weight once
    p.w = Offset<D>(w.data, row_begin * K);
    p.x = x;
    p.y = y + row_begin;
    p.len = K;
    p.accumulate = false;
    RowSweep<D>(p, row_end - row_begin, 1);
    return;
  }
  // Batched: see gemm_dense_avx512.cc; the 4-row weight tile is reused from L1 by every
  // token pair of the block, 16-bit weights are converted into it once per token block.
  alignas(32) float wbuf[4 * kColBlock];
  for (int64_t k0 = 0; k0 < K; k0 += kColBlock) {
    const int64_t len = std::min(kColBlock, K - k0);
    for (int64_t t0 = 0; t0 < n; t0 += kTokenBlock) {
      const int64_t t1 = std::min(n, t0 + kTokenBlock);
      const bool convert = D != DType::kF32 && t1 - t0 >= 4;
      for (int64_t r = row_begin; r < row_end; r += 4) {
        const int64_t nr = std::min<int64_t>(4, row_end - r);
        const void* wtile = Offset<D>(w.data, r * K + k0);
        if (convert) ConvertRows<D>(wtile, K, nr, len, wbuf);
        for (int64_t t = t0; t < t1; t += 2) {
          p.x = x + t * K + k0;
          p.y = y + t * ldy + r;
          p.len = len;
          p.accumulate = k0 > 0;
          const int64_t nt = std::min<int64_t>(2, t1 - t);
          if (convert) {
            p.w = wbuf;
            p.ldw = len;
            RowSweep<DType::kF32>(p, nr, nt);
          } else {
            p.w = wtile;
            p.ldw = K;
            RowSweep<D>(p, nr, nt);
          }
        }
      }
    }
  }
}

}  // namespace

void GemmDenseAvx2(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                   int64_t row_begin, int64_t row_end) {
  switch (w.format.dtype) {
    case DType::kF16:
      return GemmDense<DType::kF16>(w, x, n, y, ldy, row_begin, row_end);
    case DType::kBF16:
      return GemmDense<DType::kBF16>(w, x, n, y, ldy, row_begin, row_end);
    default:
      return GemmDense<DType::kF32>(w, x, n, y, ldy, row_begin, row_end);
  }
}

}  // namespace compressd::kernels
