// AVX-512 dense GEMM y[t][r] = sum_c W[r][c] * x[t][c] for F32/F16/BF16 weights, fp32
// activations and fp32 accumulation.
//
// Shape of the work: each output is a dot product along cols, so the micro-kernel holds an
// R-rows x T-tokens tile of 16-lane accumulators, loads each weight vector once and uses it
// for T tokens (T=4 at batch >= 4), and reduces the tile horizontally once per K block.
// - n < 4 (decode): memory bound. 8 rows at a time so that 8 independent FMA chains hide the
//   FMA latency and 8 sequential streams keep the hardware prefetchers busy.
// - n >= 4: 4 rows x 4 tokens (16 accumulators + 4 x vectors + 1 weight = 21 zmm). Each
//   weight is converted once and used 4 times, so F16/BF16 conversion cost is amortised.
// - large n (prefill): tokens are blocked (kTokenBlock) and cols are blocked so that the
//   activation block stays in L2 while the 4 weight rows of the current row group stay in
//   L1 across all token groups; weights are streamed from memory once per token block.
// BF16 -> F32 is a 16-bit shift (exact); F16 -> F32 uses vcvtph2ps (exact). Column tails use
// masked loads, which never touch memory outside the row.
// GCC 12's AVX-512 intrinsics use _mm512_undefined_*() as the merge source of unmasked
// operations, which -W(maybe-)uninitialized reports (falsely) in every caller.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "kernels/gemm.h"

namespace compressd::kernels {
namespace {

// Token block x column block of activations: 64 x 1024 fp32 = 256 KiB stays in L2 (1 MiB on
// Zen 4); a 4-row weight tile of 1024 columns (16 KiB fp32) stays in L1 (32 KiB).
constexpr int64_t kTokenBlock = 64;
constexpr int64_t kColBlock = 1024;

template <DType D>
inline __m512 LoadW(const void* base, int64_t i) {
  if constexpr (D == DType::kF32) {
    return _mm512_loadu_ps(static_cast<const float*>(base) + i);
  } else if constexpr (D == DType::kF16) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(
        reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(base) + i)));
  } else {
    const __m256i h = _mm256_loadu_si256(
        reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(base) + i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
}

template <DType D>
inline __m512 LoadWMasked(const void* base, int64_t i, __mmask16 m) {
  if constexpr (D == DType::kF32) {
    return _mm512_maskz_loadu_ps(m, static_cast<const float*>(base) + i);
  } else if constexpr (D == DType::kF16) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(base) + i));
  } else {
    const __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(base) + i);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
}

// [sum(a), sum(b), sum(c), sum(d)]: one transpose-and-add tree instead of four reductions.
inline __m128 Reduce4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
  const __m256 b8 = _mm256_add_ps(_mm512_castps512_ps256(b), _mm512_extractf32x8_ps(b, 1));
  const __m256 c8 = _mm256_add_ps(_mm512_castps512_ps256(c), _mm512_extractf32x8_ps(c, 1));
  const __m256 d8 = _mm256_add_ps(_mm512_castps512_ps256(d), _mm512_extractf32x8_ps(d, 1));
  const __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a8, b8), _mm256_hadd_ps(c8, d8));
  return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
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

template <DType D, int R, int T>
void Micro(const Tile& p) {
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  }
  const float* xs[T];
  for (int t = 0; t < T; ++t) xs[t] = p.x + t * p.ldx;
  int64_t wrow[R];
  for (int r = 0; r < R; ++r) wrow[r] = r * p.ldw;

  int64_t k = 0;
  for (; k + 16 <= p.len; k += 16) {
    __m512 xv[T];
    for (int t = 0; t < T; ++t) xv[t] = _mm512_loadu_ps(xs[t] + k);
    for (int r = 0; r < R; ++r) {
      const __m512 wv = LoadW<D>(p.w, wrow[r] + k);
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  if (k < p.len) {
    const __mmask16 m = static_cast<__mmask16>((1u << (p.len - k)) - 1u);
    __m512 xv[T];
    for (int t = 0; t < T; ++t) xv[t] = _mm512_maskz_loadu_ps(m, xs[t] + k);
    for (int r = 0; r < R; ++r) {
      const __m512 wv = LoadWMasked<D>(p.w, wrow[r] + k, m);
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }

  for (int t = 0; t < T; ++t) {
    float* yt = p.y + t * p.ldy;
    if constexpr (R % 4 == 0) {
      for (int r = 0; r < R; r += 4) {
        __m128 s = Reduce4(acc[r][t], acc[r + 1][t], acc[r + 2][t], acc[r + 3][t]);
        if (p.accumulate) s = _mm_add_ps(s, _mm_loadu_ps(yt + r));
        _mm_storeu_ps(yt + r, s);
      }
    } else {
      for (int r = 0; r < R; ++r) {
        const float s = _mm512_reduce_add_ps(acc[r][t]);
        yt[r] = p.accumulate ? yt[r] + s : s;
      }
    }
  }
}

template <DType D, int R>
void MicroT(const Tile& p, int64_t t_count) {
  switch (t_count) {
    case 1:
      return Micro<D, R, 1>(p);
    case 2:
      return Micro<D, R, 2>(p);
    case 3:
      return Micro<D, R, 3>(p);
    default:
      return Micro<D, R, 4>(p);
  }
}

template <DType D>
inline const void* Offset(const void* base, int64_t elems) {
  return static_cast<const char*>(base) + elems * (D == DType::kF32 ? 4 : 2);
}

// Runs `rows` rows starting at p.w / p.y for t_count (<= 4) tokens: full groups of row_block
// rows, then the remainder in 4/2/1 pieces.
template <DType D>
void RowSweep(Tile p, int64_t rows, int64_t t_count, int row_block) {
  const void* const w0 = p.w;
  float* const y0 = p.y;
  int64_t r = 0;
  auto run = [&](int nr) {
    p.w = Offset<D>(w0, r * p.ldw);
    p.y = y0 + r;
    switch (nr) {
      case 8:
        Micro<D, 8, 1>(p);
        break;  // only used when t_count == 1
      case 4:
        MicroT<D, 4>(p, t_count);
        break;
      case 2:
        MicroT<D, 2>(p, t_count);
        break;
      default:
        MicroT<D, 1>(p, t_count);
        break;
    }
    r += nr;
  };
  if (row_block == 8 && t_count == 1) {
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
    for (; k + 16 <= len; k += 16) _mm512_storeu_ps(d + k, LoadW<D>(s, k));
    if (k < len) {
      const __mmask16 m = static_cast<__mmask16>((1u << (len - k)) - 1u);
      _mm512_mask_storeu_ps(d + k, m, LoadWMasked<D>(s, k, m));
    }
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
  if (n < 4) {  // decode: a single pass streams every weight once
    p.w = Offset<D>(w.data, row_begin * K);
    p.x = x;
    p.y = y + row_begin;
    p.len = K;
    p.accumulate = false;
    RowSweep<D>(p, row_end - row_begin, n, 8);
    return;
  }
  // Batched: the weight tile of one row group (4 rows x kColBlock) is reused from L1 by every
  // token group of the token block. 16-bit weights are converted into that tile once, so
  // the conversion is paid once per kTokenBlock tokens instead of once per 4.
  alignas(64) float wbuf[4 * kColBlock];
  for (int64_t k0 = 0; k0 < K; k0 += kColBlock) {
    const int64_t len = std::min(kColBlock, K - k0);
    for (int64_t t0 = 0; t0 < n; t0 += kTokenBlock) {
      const int64_t t1 = std::min(n, t0 + kTokenBlock);
      const bool convert = D != DType::kF32 && t1 - t0 >= 8;
      for (int64_t r = row_begin; r < row_end; r += 4) {
        const int64_t nr = std::min<int64_t>(4, row_end - r);
        const void* wtile = Offset<D>(w.data, r * K + k0);
        if (convert) ConvertRows<D>(wtile, K, nr, len, wbuf);
        for (int64_t t = t0; t < t1; t += 4) {
          p.x = x + t * K + k0;
          p.y = y + t * ldy + r;
          p.len = len;
          p.accumulate = k0 > 0;
          const int64_t nt = std::min<int64_t>(4, t1 - t);
          if (convert) {
            p.w = wbuf;
            p.ldw = len;
            RowSweep<DType::kF32>(p, nr, nt, 4);
          } else {
            p.w = wtile;
            p.ldw = K;
            RowSweep<D>(p, nr, nt, 4);
          }
        }
      }
    }
  }
}

}  // namespace

void GemmDenseAvx512(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
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
