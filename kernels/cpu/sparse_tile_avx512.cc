// AVX-512 engine of sparse_tile.h: decoded fp32 tile x activations, R rows x T tokens of
// 16-lane accumulators. Each (row, token) is reduced with the same _mm512_reduce_add_ps no
// matter how rows and tokens are grouped, so grouping never changes a result.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <algorithm>

#include "kernels/sparse.h"
#include "kernels/sparse_tile.h"

namespace compressd::kernels {
namespace {

constexpr int64_t kTokenBlock = 64;

template <int R, int T>
void Micro(const float* w, int64_t ldw, const float* x, int64_t ldx, float* y, int64_t ldy,
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
  for (int t = 0; t < T; ++t) {
    for (int r = 0; r < R; ++r) {
      const float s = _mm512_reduce_add_ps(acc[r][t]);
      float* o = y + t * ldy + r;
      *o = accumulate ? *o + s : s;
    }
  }
}

template <int R>
void MicroT(int64_t nt, const float* w, int64_t ldw, const float* x, int64_t ldx, float* y,
            int64_t ldy, int64_t len, bool acc) {
  switch (nt) {
    case 1: return Micro<R, 1>(w, ldw, x, ldx, y, ldy, len, acc);
    case 2: return Micro<R, 2>(w, ldw, x, ldx, y, ldy, len, acc);
    case 3: return Micro<R, 3>(w, ldw, x, ldx, y, ldy, len, acc);
    default: return Micro<R, 4>(w, ldw, x, ldx, y, ldy, len, acc);
  }
}

}  // namespace

void DecodedGemmAvx512(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                       int64_t row_begin, int64_t row_end, BlockDecodeFn decode) {
  const int64_t K = w.cols;
  if (n <= 0 || row_end <= row_begin) return;
  if (K == 0) {
    for (int64_t t = 0; t < n; ++t) std::fill(y + t * ldy + row_begin, y + t * ldy + row_end, 0.f);
    return;
  }
  alignas(64) float wbuf[4 * kSparseBlockCols];
  for (int64_t k0 = 0; k0 < K; k0 += kSparseBlockCols) {
    const int64_t len = std::min(kSparseBlockCols, K - k0);
    const bool acc = k0 > 0;
    for (int64_t t0 = 0; t0 < n; t0 += kTokenBlock) {
      const int64_t t1 = std::min(n, t0 + kTokenBlock);
      for (int64_t r = row_begin; r < row_end; r += 4) {
        const int64_t nr = std::min<int64_t>(4, row_end - r);
        for (int64_t i = 0; i < nr; ++i) decode(w, r + i, k0, len, wbuf + i * len);
        for (int64_t t = t0; t < t1; t += 4) {
          const int64_t nt = std::min<int64_t>(4, t1 - t);
          const float* xt = x + t * K + k0;
          float* yt = y + t * ldy + r;
          int64_t i = 0;
          if (nr == 4) {
            MicroT<4>(nt, wbuf, len, xt, K, yt, ldy, len, acc);
            i = 4;
          }
          for (; i < nr; ++i) MicroT<1>(nt, wbuf + i * len, len, xt, K, yt + i, ldy, len, acc);
        }
      }
    }
  }
}

}  // namespace compressd::kernels
