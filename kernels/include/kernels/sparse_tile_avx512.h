// AVX-512 form of the sparse_tile.h engine, templated on a register decoder so that decode
// (n <= 4) happens in registers and feeds the FMAs directly, with no tile round trip. Include
// only from *_avx512.cc files (needs AVX-512 code generation).
//
// A decoder is a struct with
//   void Start(const PackedWeight& w, int64_t r, int64_t k0);  // row r, column k0
//   __m512 Next();  // the next 16 columns (zeros past cols)
// For n > 4 each (row group, column block) is decoded once into an L1 tile with the same
// decoder and reused by every 4-token group. Both paths perform, per (row, token), the same
// FMAs on the same values in the same order (lanes beyond the block are masked to zero in
// both) and the same reduction, so the result never depends on n or on the row range.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "kernels/sparse.h"
#include "kernels/weight_format.h"

namespace compressd::kernels::tile512 {

constexpr int64_t kTokenBlock = 64;

template <int R, int T>
inline void Finish(__m512 (&acc)[R][T], float* y, int64_t ldy, bool accumulate) {
  for (int t = 0; t < T; ++t) {
    for (int r = 0; r < R; ++r) {
      const float s = _mm512_reduce_add_ps(acc[r][t]);
      float* o = y + t * ldy + r;
      *o = accumulate ? *o + s : s;
    }
  }
}

// Decode in registers: R rows x T tokens over one column block.
template <class Dec, int R, int T>
void FusedMicro(const PackedWeight& w, int64_t r0, int64_t k0, int64_t len, const float* x,
                int64_t ldx, float* y, int64_t ldy, bool accumulate) {
  Dec d[R];
  for (int r = 0; r < R; ++r) d[r].Start(w, r0 + r, k0);
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  }
  int64_t k = 0;
  for (; k + 16 <= len; k += 16) {
    __m512 xv[T];
    for (int t = 0; t < T; ++t) xv[t] = _mm512_loadu_ps(x + t * ldx + k);
    for (int r = 0; r < R; ++r) {
      const __m512 wv = d[r].Next();
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  if (k < len) {
    const __mmask16 m = static_cast<__mmask16>((1u << (len - k)) - 1u);
    __m512 xv[T];
    for (int t = 0; t < T; ++t) xv[t] = _mm512_maskz_loadu_ps(m, x + t * ldx + k);
    for (int r = 0; r < R; ++r) {
      const __m512 wv = _mm512_maskz_mov_ps(m, d[r].Next());
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  Finish<R, T>(acc, y, ldy, accumulate);
}

// From a decoded tile (row stride ldw).
template <int R, int T>
void TileMicro(const float* w, int64_t ldw, const float* x, int64_t ldx, float* y, int64_t ldy,
               int64_t len, bool accumulate) {
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  }
  int64_t k = 0;
  for (; k + 16 <= len; k += 16) {
    __m512 xv[T];
    for (int t = 0; t < T; ++t) xv[t] = _mm512_loadu_ps(x + t * ldx + k);
    for (int r = 0; r < R; ++r) {
      const __m512 wv = _mm512_loadu_ps(w + r * ldw + k);
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  if (k < len) {
    const __mmask16 m = static_cast<__mmask16>((1u << (len - k)) - 1u);
    __m512 xv[T];
    for (int t = 0; t < T; ++t) xv[t] = _mm512_maskz_loadu_ps(m, x + t * ldx + k);
    for (int r = 0; r < R; ++r) {
      const __m512 wv = _mm512_maskz_loadu_ps(m, w + r * ldw + k);
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  Finish<R, T>(acc, y, ldy, accumulate);
}

template <int R>
inline void TileMicroT(int64_t nt, const float* w, int64_t ldw, const float* x, int64_t ldx,
                       float* y, int64_t ldy, int64_t len, bool acc) {
  switch (nt) {
    case 1: return TileMicro<R, 1>(w, ldw, x, ldx, y, ldy, len, acc);
    case 2: return TileMicro<R, 2>(w, ldw, x, ldx, y, ldy, len, acc);
    case 3: return TileMicro<R, 3>(w, ldw, x, ldx, y, ldy, len, acc);
    default: return TileMicro<R, 4>(w, ldw, x, ldx, y, ldy, len, acc);
  }
}

template <class Dec, int T>
void FusedRows(const PackedWeight& w, const float* x, float* y, int64_t ldy, int64_t row_begin,
               int64_t row_end) {
  const int64_t K = w.cols;
  for (int64_t k0 = 0; k0 < K; k0 += kSparseBlockCols) {
    const int64_t len = std::min(kSparseBlockCols, K - k0);
    int64_t r = row_begin;
    for (; r + 4 <= row_end; r += 4) {
      FusedMicro<Dec, 4, T>(w, r, k0, len, x + k0, K, y + r, ldy, k0 > 0);
    }
    for (; r < row_end; ++r) FusedMicro<Dec, 1, T>(w, r, k0, len, x + k0, K, y + r, ldy, k0 > 0);
  }
}

template <class Dec>
void Gemm(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
          int64_t row_begin, int64_t row_end) {
  const int64_t K = w.cols;
  if (n <= 0 || row_end <= row_begin) return;
  if (K == 0) {
    for (int64_t t = 0; t < n; ++t) std::fill(y + t * ldy + row_begin, y + t * ldy + row_end, 0.f);
    return;
  }
  switch (n) {
    case 1: return FusedRows<Dec, 1>(w, x, y, ldy, row_begin, row_end);
    case 2: return FusedRows<Dec, 2>(w, x, y, ldy, row_begin, row_end);
    case 3: return FusedRows<Dec, 3>(w, x, y, ldy, row_begin, row_end);
    case 4: return FusedRows<Dec, 4>(w, x, y, ldy, row_begin, row_end);
    default: break;
  }
  // Row stride padded by 16 floats: rows 4 KiB apart would alias in L1.
  alignas(64) float wbuf[4 * (kSparseBlockCols + 16)];
  for (int64_t k0 = 0; k0 < K; k0 += kSparseBlockCols) {
    const int64_t len = std::min(kSparseBlockCols, K - k0);
    const int64_t padded = (len + 15) / 16 * 16, ldw = padded + 16;
    const bool acc = k0 > 0;
    for (int64_t t0 = 0; t0 < n; t0 += kTokenBlock) {
      const int64_t t1 = std::min(n, t0 + kTokenBlock);
      for (int64_t r = row_begin; r < row_end; r += 4) {
        const int64_t nr = std::min<int64_t>(4, row_end - r);
        for (int64_t i = 0; i < nr; ++i) {
          Dec d;
          d.Start(w, r + i, k0);
          for (int64_t k = 0; k < padded; k += 16) _mm512_storeu_ps(wbuf + i * ldw + k, d.Next());
        }
        for (int64_t t = t0; t < t1; t += 4) {
          const int64_t nt = std::min<int64_t>(4, t1 - t);
          const float* xt = x + t * K + k0;
          float* yt = y + t * ldy + r;
          int64_t i = 0;
          if (nr == 4) {
            TileMicroT<4>(nt, wbuf, ldw, xt, K, yt, ldy, len, acc);
            i = 4;
          }
          for (; i < nr; ++i) TileMicroT<1>(nt, wbuf + i * ldw, ldw, xt, K, yt + i, ldy, len, acc);
        }
      }
    }
  }
}

}  // namespace compressd::kernels::tile512
