// W8A16 GEMM/GEMV for per-row int8 (kInt8Row: s8 codes, fp32 row scale; the `int8` preset)
// with AVX-512 VNNI. Definition: quant.h, QuantUsesA16; scalar oracle: GemmQuant8A16Ref
// (quant_a8_ref.cc).
//
// Why: the float path widens every code to fp32 (sign-extend, convert, FMA: 6 ops per 32
// weights) and is compute bound at ~35-42 GB/s per core, so a 2-thread decode keeps little
// slack over DRAM. With int8 activations the int8 preset lost accuracy (KL on kdocs-7m
// 0.000022 -> 0.000051); int16 activations lose ~256x less, and vpdpwssd multiplies 32
// sign-extended codes with 32 int16 activations in one op: 2 ops per 32 weights.
//
// Per 256-column block b (one activation scale s_tb per token) and (row r, token t):
//   i32[16] = sum over the block's 32-column steps of dpwssd(code_r (s8 -> s16), q_t)
//   acc[r][t] += float(i32) * s_tb
// y[t][r] = row_scale_r * (sum of the 16 lanes of acc[r][t]).
// |i32 lane| <= 16 * 127 * 32767 per block: no overflow.
//
// Batch invariance: every (row, token) output is the same chain of operations whatever the
// tile (R rows x T tokens), n or row range.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/gemm.h"
#include "kernels/quant.h"
#include "stream_prefetch_inl.h"

namespace compressd::kernels {
namespace {

constexpr int64_t kTokenBlock = 64;  // tokens whose activations are prepared together
// Decode tiles larger than NextTilePrefetch::kMaxTileBytes prefetch each row this far ahead
// (as the float path's long rows do).
constexpr int64_t kRowAhead = 1024;

struct Acts {
  const int16_t* q = nullptr;  // [n][cp], zeros past cols
  const float* s = nullptr;    // [n][nb]
  int64_t cp = 0, nb = 0;
};

// Same arithmetic as the reference (quant_a8_ref.cc, QuantizeA16Block): per block
// amax = max |x|, inv = 32767 / amax, q = round-half-even(x * inv) clamped to +-32767,
// s = amax / 32767.
void PrepareActs(const float* x, int64_t n, int64_t cols, int64_t cp, int16_t* q, float* s) {
  const int64_t nb = (cp + kA16Block - 1) / kA16Block;
  const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  const __m512i lim = _mm512_set1_epi32(32767), nlim = _mm512_set1_epi32(-32767);
  for (int64_t t = 0; t < n; ++t) {
    const float* xt = x + t * cols;
    int16_t* qt = q + t * cp;
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t c0 = b * kA16Block, c1 = std::min(cp, c0 + kA16Block);
      __m512 m = _mm512_setzero_ps();
      for (int64_t c = c0; c < c1; c += 16) {
        const int64_t left = std::clamp<int64_t>(cols - c, 0, 16);
        const __mmask16 k = static_cast<__mmask16>((1u << left) - 1u);
        m = _mm512_max_ps(m, _mm512_and_ps(_mm512_maskz_loadu_ps(k, xt + c), absmask));
      }
      const float amax = _mm512_reduce_max_ps(m);
      const float inv = amax > 0.0f ? 32767.0f / amax : 0.0f;
      const __m512 vinv = _mm512_set1_ps(inv);
      for (int64_t c = c0; c < c1; c += 16) {
        const int64_t left = std::clamp<int64_t>(cols - c, 0, 16);
        const __mmask16 k = static_cast<__mmask16>((1u << left) - 1u);
        const __m512i v = _mm512_max_epi32(
            _mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, xt + c), vinv)),
                             lim),
            nlim);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(qt + c), _mm512_cvtepi32_epi16(v));
      }
      s[t * nb + b] = amax / 32767.0f;
    }
  }
}

// out[r][t] = (row r . token t) before the row scale, for R rows x T tokens.
// PF: decode tile within NextTilePrefetch's size; ROWPF: longer decode tiles, per row.
template <int R, int T, bool PF = false, bool ROWPF = false>
void Tile(const int8_t* const* codes, const Acts& a, float (*out)[2], NextTilePrefetch pf = {}) {
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < a.nb; ++b) {
    const int64_t c0 = b * kA16Block, c1 = std::min(a.cp, c0 + kA16Block);
    __m512i d[R][T];
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) d[r][t] = _mm512_setzero_si512();
    for (int64_t c = c0; c < c1; c += 32) {
      if constexpr (PF) pf.Step<R * 32>();
      if constexpr (ROWPF) {
        if ((c & 63) == 0) {
          for (int r = 0; r < R; ++r) {
            _mm_prefetch(reinterpret_cast<const char*>(codes[r] + c + kRowAhead), _MM_HINT_T0);
          }
        }
      }
      __m512i xv[T];
      for (int t = 0; t < T; ++t) xv[t] = _mm512_loadu_si512(a.q + t * a.cp + c);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m512i w =
            _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes[r] + c)));
        for (int t = 0; t < T; ++t) d[r][t] = _mm512_dpwssd_epi32(d[r][t], w, xv[t]);
      }
    }
    for (int t = 0; t < T; ++t) {
      const __m512 sv = _mm512_set1_ps(a.s[t * a.nb + b]);
      for (int r = 0; r < R; ++r) {
        acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d[r][t]), sv, acc[r][t]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) out[r][t] = _mm512_reduce_add_ps(acc[r][t]);
}

// R rows over the n tokens of `a`, 2 tokens at a time. The first pass prefetches the rows
// after these (`pf`): without it, short rows (a 576-column lm_head row is 9 lines) wait for
// DRAM at every tile, and 4 tokens ran at 1/4 the rate of one on SmolLM2's 49152 x 576
// lm_head.
template <int R>
void RowsAllTokens(const int8_t* const* codes, const Acts& a, int64_t n, const int64_t* rows,
                   const float* row_scale, float* y, int64_t ldy, NextTilePrefetch pf = {}) {
  for (int64_t t = 0; t < n;) {
    Acts at = a;
    at.q += t * a.cp;
    at.s += t * a.nb;
    float o[R][2];
    const int tt = n - t >= 2 ? 2 : 1;
    if (t == 0) {
      if (tt == 2) {
        Tile<R, 2, true>(codes, at, o, pf);
      } else {
        Tile<R, 1, true>(codes, at, o, pf);
      }
    } else if (tt == 2) {
      Tile<R, 2>(codes, at, o);
    } else {
      Tile<R, 1>(codes, at, o);
    }
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < tt; ++j) y[(t + j) * ldy + rows[r]] = o[r][j] * row_scale[rows[r]];
    t += tt;
  }
}

}  // namespace

void Quant8A16ActsReserve(const PackedWeight& w, const float* x, int64_t n, ActCache* c) {
  const int64_t cp = QuantPaddedCols(w.format, w.cols);
  const int64_t nb = (cp + kA16Block - 1) / kA16Block;
  c->kind = ActCache::kQuant8A16;
  c->x = x;
  c->n = n;
  c->cols = w.cols;
  c->cols_pad = cp;
  c->group = kA16Block;
  c->q_stride = cp;
  c->s_stride = nb;
  c->q16.resize(static_cast<size_t>(n * cp));
  c->s.resize(static_cast<size_t>(n * nb));
}

void Quant8A16ActsFill(int64_t t_begin, int64_t t_end, ActCache* c) {
  if (c->kind != ActCache::kQuant8A16 || t_begin >= t_end) return;
  PrepareActs(c->x + t_begin * c->cols, t_end - t_begin, c->cols, c->cols_pad,
              c->q16.data() + t_begin * c->q_stride, c->s.data() + t_begin * c->s_stride);
}

void GemmQuant8A16Avx512(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                         int64_t row_begin, int64_t row_end) {
  GemmQuant8A16Avx512Acts(w, x, n, y, ldy, row_begin, row_end, nullptr);
}

void GemmQuant8A16Avx512Acts(const PackedWeight& w, const float* x, int64_t n, float* y,
                             int64_t ldy, int64_t row_begin, int64_t row_end,
                             const ActCache* acts) {
  if (n <= 0 || row_begin >= row_end) return;
  const int64_t cols = w.cols, cp = QuantPaddedCols(w.format, cols);
  const int64_t nb = (cp + kA16Block - 1) / kA16Block;
  const auto* base = static_cast<const int8_t*>(w.data);
  const auto* row_scale = static_cast<const float*>(w.aux[0]);
  // Activations prepared once for this x (ActCache), or quantized here per token block.
  const bool shared = acts != nullptr && acts->kind == ActCache::kQuant8A16 && acts->x == x &&
                      acts->n == n && acts->cols == cols && acts->cols_pad == cp;
  thread_local std::vector<int16_t> qbuf;
  thread_local std::vector<float> sbuf;
  if (!shared) {
    const int64_t tb = std::min(n, kTokenBlock);
    qbuf.resize(static_cast<size_t>(tb * cp));
    sbuf.resize(static_cast<size_t>(tb * nb));
  }
  const int8_t* const range_end = base + row_end * cp;
  for (int64_t t0 = 0; t0 < n; t0 += kTokenBlock) {
    const int64_t nt = std::min(kTokenBlock, n - t0);
    Acts a;
    if (shared) {
      a.q = acts->q16.data() + t0 * cp;
      a.s = acts->s.data() + t0 * nb;
    } else {
      PrepareActs(x + t0 * cols, nt, cols, cp, qbuf.data(), sbuf.data());
      a.q = qbuf.data();
      a.s = sbuf.data();
    }
    a.cp = cp;
    a.nb = nb;
    float* yt = y + t0 * ldy;
    for (int64_t r = row_begin; r < row_end;) {
      const int8_t* codes[8];
      int64_t rows[8];
      const int limit = nt == 1 ? 8 : 4;
      const int nr = static_cast<int>(std::min<int64_t>(limit, row_end - r));
      for (int i = 0; i < nr; ++i) {
        codes[i] = base + (r + i) * cp;
        rows[i] = r + i;
      }
      if (nt == 1 && nr == 8) {
        // Decode: the rows after this tile are prefetched as one stream (short rows) or each
        // row ahead of itself (long rows).
        float o[8][2];
        if (8 * cp > NextTilePrefetch::kMaxTileBytes) {
          Tile<8, 1, false, true>(codes, a, o);
        } else {
          Tile<8, 1, true>(codes, a, o, NextTilePrefetch(base + (r + 8) * cp, range_end, 8 * cp));
        }
        for (int i = 0; i < 8; ++i) yt[rows[i]] = o[i][0] * row_scale[rows[i]];
      } else {
        int i = 0;
        for (; i + 4 <= nr; i += 4) {
          RowsAllTokens<4>(codes + i, a, nt, rows + i, row_scale, yt, ldy,
                           NextTilePrefetch(codes[i] + 4 * cp, range_end, 4 * cp));
        }
        for (; i < nr; ++i) RowsAllTokens<1>(codes + i, a, nt, rows + i, row_scale, yt, ldy);
      }
      r += nr;
    }
  }
}

}  // namespace compressd::kernels
