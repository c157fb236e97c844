// W4A8 GEMM/GEMV for 4-bit group formats with AVX-512 VNNI (definition: quant.h,
// QuantUsesA8; scalar oracle: quant_a8_ref.cc).
//
// Why: decoding 4-bit codes to fp32 costs ~5 vector ops per 16 weights and made the fp32
// path compute bound at ~15 GB/s. Here one 64-byte load holds 4 chunks (128 weights); two
// and/shift ops give their low and high nibbles as u8, which vpdpbusd multiplies with int8
// activations stored in the matching order, so 128 weights cost ~10 vector ops.
//
// Per 128-column block b and (row r, token t):
//   i32[16] = dpbusd(dpbusd(0, lo_r, xlo_t), hi_r, xhi_t)  (int32 lane l: chunk l/4 of b)
//   acc[r][t] += float(i32) * (d_lane_r * s_lane_t)         (group scale x chunk scale)
// and once per 16 groups acc[r][t] += min[16] * xsum_t[16] (xsum = sum of x^ over a group).
// y[t][r] = sum of the 16 lanes of acc[r][t].
//
// Activation layout per token (built once per call): block b holds 128 int8 values, the
// first 64 in "low nibble" order (chunk i, values 0..15 at bytes 16i..16i+15) and the next
// 64 in "high nibble" order (values 16..31), i.e. the order of the code bytes.
//
// Superblock layout (WeightFormat::layout == kLayoutA8Superblock, quant.h): each row's full
// 512-column spans (16 chunks) are stored word-transposed, so that 32-bit lane l of the k-th
// 64-byte load holds bytes 4k..4k+3 of chunk l. Eight vpdpbusd (4 loads x low/high nibbles)
// then sum a whole chunk in lane l, and the float work (convert, scale, FMA) is done once per
// 512 weights instead of once per 128: ~25 vector ops per 512 weights and row instead of ~36.
// The activations of such a span are stored in the same order (XL_k, XH_k for k = 0..3, 64
// bytes each; lane l of the scales = chunk l). Columns after the last full span keep the
// 128-column blocks above.
//
// GGUF Q4_0 in its split layout (kLayoutGgufSplit, ggml_quant.h) runs here as group 32 in
// superblock order whose scales are fp16 d alone: min = -8 d (Tile's SYM).
//
// Batch invariance: every (row, token) output is the same chain of operations whatever the
// tile (R rows x T tokens), n or row range, so a token's result does not depend on the rest
// of the batch. Weight tiles are decoded once per block and reused by all T tokens, which
// makes a 16-token batch read each weight once (issue #3).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/gemm.h"
#include "kernels/ggml_quant.h"
#include "kernels/quant.h"
#include "kernels/quant_a8_avx512.h"
#include "stream_prefetch_inl.h"

namespace compressd::kernels {
namespace {

constexpr int64_t kBlock = 128;      // columns per 64-byte code block
constexpr int64_t kTokenBlock = 64;  // tokens whose activations are prepared together
// Decode tiles are 4 rows (8 rows spilled and measured ~1.5x slower). The rows after the
// tile are prefetched as one stream (stream_prefetch_inl.h).
constexpr int kDecodeRows = 4;
constexpr int kMaxT = 6;             // 2 rows x 6 tokens: 12 accumulators, ~28 zmm live

struct Acts {
  int64_t nb = 0;              // blocks per token
  int64_t ngp = 0;             // groups per token, rounded up to 16
  int64_t nsb = 0;             // leading 512-column superblocks (0: canonical layout)
  const int8_t* q = nullptr;   // [n][nb][128], nibble order
  const float* s = nullptr;    // [n][nb][16]: lane l = scale of chunk l/4
  const float* sum = nullptr;  // [n][ngp]: sum of x^ over each group
  int64_t row_bytes = 0;        // codes per row; rows are stored back to back
  const uint8_t* end = nullptr;  // one past the last row of the call's range
  const uint8_t* s_end = nullptr;  // one past the last row's group scales
};

// Quantizes n tokens; same arithmetic as QuantizeChunksQ8 (the reference).
void PrepareActs(const float* x, int64_t n, int64_t cols, int64_t cp, int chunk_shift, int8_t* q,
                 float* s, float* sum, int64_t nb, int64_t ngp, int64_t nsb) {
  for (int64_t t = 0; t < n; ++t) {
    const float* xt = x + t * cols;
    int8_t* qt = q + t * nb * kBlock;
    float* st = s + t * nb * 16;
    float* sumt = sum + t * ngp;
    std::memset(sumt, 0, static_cast<size_t>(ngp) * sizeof(float));
    for (int64_t c = 0; c < nb * 4; ++c) {
      const int64_t c0 = c * kQuantChunk;
      const a8::Chunk ch =
          a8::QuantizeChunk32(xt + c0, std::clamp<int64_t>(cols - c0, 0, kQuantChunk));
      const __m512i q0 = ch.q0, q1 = ch.q1;
      const float sc = ch.scale;
      const int64_t b = c / 4, i = c % 4;
      if (c < 16 * nsb) {
        // Superblock order: word k of the chunk's low (high) 16 values -> lane c % 16 of XL_k
        // (XH_k); XL_k at 128 k, XH_k at 128 k + 64 within the span's 512 bytes.
        alignas(16) int8_t lo[16], hi[16];
        _mm_store_si128(reinterpret_cast<__m128i*>(lo), _mm512_cvtepi32_epi8(q0));
        _mm_store_si128(reinterpret_cast<__m128i*>(hi), _mm512_cvtepi32_epi8(q1));
        int8_t* span = qt + (c / 16) * 4 * kBlock;
        const int64_t l = c % 16;
        for (int k = 0; k < 4; ++k) {
          std::memcpy(span + 128 * k + 4 * l, lo + 4 * k, 4);
          std::memcpy(span + 128 * k + 64 + 4 * l, hi + 4 * k, 4);
        }
        st[(c / 16) * 64 + l] = c0 < cp ? sc : 0.0f;
      } else {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(qt + b * kBlock + i * 16),
                         _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(qt + b * kBlock + 64 + i * 16),
                         _mm512_cvtepi32_epi8(q1));
        _mm_storeu_ps(st + b * 16 + i * 4, _mm_set1_ps(c0 < cp ? sc : 0.0f));
      }
      const int isum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
      sumt[c >> chunk_shift] += sc * static_cast<float>(isum);
    }
  }
}

// out[r][t] = row r . token t for R rows x T tokens. WIDE: group >= 128, so a block's 4
// chunks share one group and its scale is a broadcast (from memory: a load, no shuffle).
// SYM: GGUF Q4_0 split layout (ggml_quant.h): gs[r] points at fp16 d [ng], and min = -8 d.
template <bool WIDE, bool SYM, int R, int T>
void Tile(const uint8_t* const* codes, const GroupScale* const* gs, int64_t ng, int64_t cp,
          int chunk_shift, const Acts& a, float (*out)[kMaxT]) {
  NextTilePrefetch pf(codes[R - 1] + a.row_bytes, a.end, R * a.row_bytes);
  // The rows' group scales are a second sequential stream (a quarter of the code bytes at
  // group 32), prefetched the same way, one window of 16 scales per row and step.
  constexpr int64_t kScaleBytes = SYM ? 2 : sizeof(GroupScale);
  NextTilePrefetch spf(reinterpret_cast<const uint8_t*>(gs[R - 1]) + ng * kScaleBytes, a.s_end,
                       R * ng * kScaleBytes);
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  const int64_t nb = a.nb;
  const int64_t full_blocks = cp / kBlock;  // the last block may hold only 2 chunks
  const int64_t blocks_per_window = (int64_t{16} << chunk_shift) / 4;
  const __m512i lane_chunk = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
  const __m128i shift = _mm_cvtsi32_si128(chunk_shift);
  const __m512i nib = _mm512_set1_epi8(0x0f);
  for (int64_t win = 0, b0 = 0; b0 < nb; ++win, b0 += blocks_per_window) {
    const int64_t b1 = std::min(nb, b0 + blocks_per_window);
    const int64_t gleft = ng - 16 * win;
    const __mmask16 gm = static_cast<__mmask16>(gleft >= 16 ? 0xffff : (1u << gleft) - 1u);
    spf.Step<R * 16 * kScaleBytes>();
    __m512 dv[R];
    alignas(64) float dsc[R][16];
    for (int r = 0; r < R; ++r) {
      __m512 mv;
      if constexpr (SYM) {
        const __m256i p = _mm256_maskz_loadu_epi16(
            gm, reinterpret_cast<const uint16_t*>(gs[r]) + 16 * win);
        dv[r] = _mm512_cvtph_ps(p);
        mv = _mm512_mul_ps(dv[r], _mm512_set1_ps(-8.0f));  // exact: a power of two
      } else {
        const __m512i p = _mm512_maskz_loadu_epi32(gm, gs[r] + 16 * win);
        dv[r] = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(p));
        mv = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(p, 16)));
      }
      if constexpr (WIDE) _mm512_store_ps(dsc[r], dv[r]);
      for (int t = 0; t < T; ++t) {
        acc[r][t] = _mm512_fmadd_ps(mv, _mm512_loadu_ps(a.sum + t * a.ngp + 16 * win), acc[r][t]);
      }
    }
    // Superblocks of this window (windows hold 16 groups >= 16 chunks, so a span never
    // straddles two windows).
    int64_t b = b0;
    for (; b < b1 && b < 4 * a.nsb; b += 4) {
      const __m512i sidx = _mm512_sub_epi32(
          _mm512_srl_epi32(_mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(4 * b)),
                                            _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7,
                                                             6, 5, 4, 3, 2, 1, 0)),
                           shift),
          _mm512_set1_epi32(static_cast<int>(16 * win)));
      pf.Step<R * 256>();
      // k outer: one load of XL_k / XH_k per token serves the R rows. Each (row, token) sums
      // its span in int32 over kChains independent vpdpbusd chains (exact, so the order does
      // not change the result): 8 chained vpdpbusd per span would wait on their latency
      // when the tile has few (row, token) pairs; more chains would not fit in registers.
      constexpr int kChains = R * T <= 4 ? 4 : R * T <= 8 ? 2 : 1;
      __m512i d[kChains][R][T];
      for (int c = 0; c < kChains; ++c)
        for (int r = 0; r < R; ++r)
          for (int t = 0; t < T; ++t) d[c][r][t] = _mm512_setzero_si512();
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
        __m512i lo[R], hi[R];
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
          __m512i wv = _mm512_loadu_si512(codes[r] + b * 64 + 64 * k);
          // One load feeds both nibble masks (the compiler would otherwise fold the load
          // into each of them: two loads per code vector).
          asm("" : "+v"(wv));
          lo[r] = _mm512_and_si512(wv, nib);
          hi[r] = _mm512_and_si512(_mm512_srli_epi16(wv, 4), nib);
        }
        const int c_lo = kChains == 4 ? 2 * (k & 1) : 0;
        const int c_hi = kChains == 1 ? 0 : c_lo + 1;
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) {
          const int8_t* qb = a.q + (t * nb + b) * kBlock + 128 * k;
          const __m512i xl = _mm512_loadu_si512(qb);
          const __m512i xh = _mm512_loadu_si512(qb + 64);
#pragma GCC unroll 4
          for (int r = 0; r < R; ++r) {
            d[c_lo][r][t] = _mm512_dpbusd_epi32(d[c_lo][r][t], lo[r], xl);
            d[c_hi][r][t] = _mm512_dpbusd_epi32(d[c_hi][r][t], hi[r], xh);
          }
        }
      }
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const __m512 dls = _mm512_permutexvar_ps(sidx, dv[r]);
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) {
          __m512i sum = d[0][r][t];
          if constexpr (kChains >= 2) sum = _mm512_add_epi32(sum, d[1][r][t]);
          if constexpr (kChains == 4) {
            sum = _mm512_add_epi32(sum, _mm512_add_epi32(d[2][r][t], d[3][r][t]));
          }
          const __m512 xs = _mm512_loadu_ps(a.s + (t * nb + b) * 16);
          acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(dls, xs), acc[r][t]);
        }
      }
    }
    for (; b < b1; ++b) {
      __m512i idx;
      if constexpr (!WIDE) {
        idx = _mm512_sub_epi32(
            _mm512_srl_epi32(
                _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(4 * b)), lane_chunk), shift),
            _mm512_set1_epi32(static_cast<int>(16 * win)));
      }
      const int64_t gb = ((4 * b) >> chunk_shift) - 16 * win;  // WIDE: the block's group
      __m512i lo[R], hi[R];
      __m512 dl[R];
      pf.Step<R * 64>();
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const uint8_t* p = codes[r] + b * 64;
        __m512i wv =
            b < full_blocks ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi8(0xffffffffull, p);
        asm("" : "+v"(wv));  // one load for both nibble masks (as in the superblock loop)
        lo[r] = _mm512_and_si512(wv, nib);
        hi[r] = _mm512_and_si512(_mm512_srli_epi16(wv, 4), nib);
        dl[r] = WIDE ? _mm512_set1_ps(dsc[r][gb]) : _mm512_permutexvar_ps(idx, dv[r]);
      }
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        const int8_t* qb = a.q + (t * nb + b) * kBlock;
        const __m512i xl = _mm512_loadu_si512(qb);
        const __m512i xh = _mm512_loadu_si512(qb + 64);
        const __m512 xs = _mm512_loadu_ps(a.s + (t * nb + b) * 16);
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
          __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo[r], xl);
          d = _mm512_dpbusd_epi32(d, hi[r], xh);
          acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(dl[r], xs), acc[r][t]);
        }
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) out[r][t] = _mm512_reduce_add_ps(acc[r][t]);
}

// R rows over tokens [0, n) of `a`, in tiles of R rows x up to kMaxT tokens.
template <bool WIDE, bool SYM, int R>
void RowsAllTokens(const uint8_t* const* codes, const GroupScale* const* gs, int64_t ng, int64_t cp,
                   int chunk_shift, const Acts& a, int64_t n, const int64_t* rows, float* y,
                   int64_t ldy) {
  for (int64_t t = 0; t < n;) {
    Acts at = a;
    at.q += t * a.nb * kBlock;
    at.s += t * a.nb * 16;
    at.sum += t * a.ngp;
    float o[R][kMaxT];
    // 4-row tiles are for decode (one token); wider token tiles would not fit in registers.
    const int tt = static_cast<int>(std::min<int64_t>(R == 4 ? 1 : kMaxT, n - t));
    if constexpr (R == 4) {
      Tile<WIDE, SYM, R, 1>(codes, gs, ng, cp, chunk_shift, at, o);
    } else {
      switch (tt) {
        case 1:
          Tile<WIDE, SYM, R, 1>(codes, gs, ng, cp, chunk_shift, at, o);
          break;
        case 2:
          Tile<WIDE, SYM, R, 2>(codes, gs, ng, cp, chunk_shift, at, o);
          break;
        case 3:
          Tile<WIDE, SYM, R, 3>(codes, gs, ng, cp, chunk_shift, at, o);
          break;
        case 4:
          Tile<WIDE, SYM, R, 4>(codes, gs, ng, cp, chunk_shift, at, o);
          break;
        case 5:
          Tile<WIDE, SYM, R, 5>(codes, gs, ng, cp, chunk_shift, at, o);
          break;
        default:
          Tile<WIDE, SYM, R, 6>(codes, gs, ng, cp, chunk_shift, at, o);
          break;
      }
    }
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < tt; ++j) y[(t + j) * ldy + rows[r]] = o[r][j];
    t += tt;
  }
}

template <bool WIDE, bool SYM>
void RowTiles(int nr, const uint8_t* const* codes, const GroupScale* const* gs, int64_t ng,
              int64_t cp, int chunk_shift, const Acts& a, int64_t n, const int64_t* rows,
              float* y, int64_t ldy) {
  if (nr >= 4) {
    RowsAllTokens<WIDE, SYM, 4>(codes, gs, ng, cp, chunk_shift, a, n, rows, y, ldy);
  } else if (nr >= 2) {
    RowsAllTokens<WIDE, SYM, 2>(codes, gs, ng, cp, chunk_shift, a, n, rows, y, ldy);
  } else {
    RowsAllTokens<WIDE, SYM, 1>(codes, gs, ng, cp, chunk_shift, a, n, rows, y, ldy);
  }
}

int Log2(int64_t v) {
  int s = 0;
  while ((int64_t{1} << s) < v) ++s;
  return s;
}

}  // namespace

namespace {
// This kernel's activation layouts: canonical blocks, or superblocks first (quant.h).
// (GGUF Q4_0's split layout stores its codes in superblock order too: ggml_quant.h.)
bool SuperblockOrder(const WeightFormat& f) {
  return f.layout == kLayoutA8Superblock || f.layout == kLayoutGgufSplit;
}
int ActsKind(const WeightFormat& f) {
  return SuperblockOrder(f) ? ActCache::kQuant4A8Sb : ActCache::kQuant4A8;
}
int64_t Superblocks(const WeightFormat& f, int64_t cp) {
  return SuperblockOrder(f) ? cp / kA8Superblock : 0;
}
}  // namespace

void Quant4A8ActsReserve(const PackedWeight& w, const float* x, int64_t n, ActCache* c) {
  const WeightFormat& f = w.format;
  const int64_t cp = QuantPaddedCols(f, w.cols);
  const int64_t nb = (cp + kBlock - 1) / kBlock;
  const int64_t ngp = (cp / f.group_size + 15) / 16 * 16;
  c->kind = ActsKind(f);
  c->x = x;
  c->n = n;
  c->cols = w.cols;
  c->cols_pad = cp;
  c->group = f.group_size;
  c->q_stride = nb * kBlock;
  c->s_stride = nb * 16;
  c->sum_stride = ngp;
  c->q.resize(static_cast<size_t>(n * c->q_stride));
  c->s.resize(static_cast<size_t>(n * c->s_stride));
  c->sum.resize(static_cast<size_t>(n * c->sum_stride));
}

void Quant4A8ActsFill(int64_t t_begin, int64_t t_end, ActCache* c) {
  if ((c->kind != ActCache::kQuant4A8 && c->kind != ActCache::kQuant4A8Sb) || t_begin >= t_end) {
    return;
  }
  const int64_t nsb = c->kind == ActCache::kQuant4A8Sb ? c->cols_pad / kA8Superblock : 0;
  PrepareActs(c->x + t_begin * c->cols, t_end - t_begin, c->cols, c->cols_pad,
              Log2(c->group) - 5, c->q.data() + t_begin * c->q_stride,
              c->s.data() + t_begin * c->s_stride, c->sum.data() + t_begin * c->sum_stride,
              c->q_stride / kBlock, c->sum_stride, nsb);
}

void GemmQuant4A8Avx512(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                        int64_t row_begin, int64_t row_end) {
  GemmQuant4A8Avx512Acts(w, x, n, y, ldy, row_begin, row_end, nullptr);
}

void GemmQuant4A8Avx512Acts(const PackedWeight& w, const float* x, int64_t n, float* y,
                            int64_t ldy, int64_t row_begin, int64_t row_end,
                            const ActCache* acts) {
  if (n <= 0 || row_begin >= row_end) return;
  const WeightFormat& f = w.format;
  const int64_t cols = w.cols, cp = QuantPaddedCols(f, cols);
  const int64_t ng = cp / f.group_size;
  const int chunk_shift = Log2(f.group_size) - 5;  // chunks per group = 1 << chunk_shift
  const int64_t row_bytes = cp / kQuantChunk * 16;
  const auto* base = static_cast<const uint8_t*>(w.data);
  // Group scales: GroupScale [rows][ng], or for GGUF Q4_0's split layout fp16 d [rows][ng]
  // after the codes (min = -8 d; ggml_quant.h).
  const bool sym = f.variant == kGgufVariantQ4_0;
  const int64_t scale_bytes = sym ? 2 : static_cast<int64_t>(sizeof(GroupScale));
  const auto* scales =
      sym ? base + w.rows * row_bytes : static_cast<const uint8_t*>(w.aux[0]);

  Acts a;
  a.nb = (cp + kBlock - 1) / kBlock;
  a.ngp = (ng + 15) / 16 * 16;
  a.nsb = Superblocks(f, cp);
  a.row_bytes = row_bytes;
  a.end = base + row_end * row_bytes;
  a.s_end = scales + row_end * ng * scale_bytes;
  // Activations prepared once for this x (ActCache), or quantized here per token block.
  const bool shared = acts != nullptr && acts->kind == ActsKind(f) && acts->x == x &&
                      acts->n == n && acts->cols == cols && acts->cols_pad == cp &&
                      acts->group == f.group_size;
  thread_local std::vector<int8_t> qbuf;
  thread_local std::vector<float> sbuf, sumbuf;
  if (!shared) {
    const int64_t tb = std::min(n, kTokenBlock);
    qbuf.resize(static_cast<size_t>(tb * a.nb * kBlock));
    sbuf.resize(static_cast<size_t>(tb * a.nb * 16));
    sumbuf.resize(static_cast<size_t>(tb * a.ngp));
  }

  for (int64_t t0 = 0; t0 < n; t0 += kTokenBlock) {
    const int64_t nt = std::min(kTokenBlock, n - t0);
    if (shared) {
      a.q = acts->q.data() + t0 * acts->q_stride;
      a.s = acts->s.data() + t0 * acts->s_stride;
      a.sum = acts->sum.data() + t0 * acts->sum_stride;
    } else {
      PrepareActs(x + t0 * cols, nt, cols, cp, chunk_shift, qbuf.data(), sbuf.data(),
                  sumbuf.data(), a.nb, a.ngp, a.nsb);
      a.q = qbuf.data();
      a.s = sbuf.data();
      a.sum = sumbuf.data();
    }
    float* yt = y + t0 * ldy;
    // Decode (nt == 1): 4 rows per tile, 4 independent row streams. Batches: 2 rows x up to 6
    // tokens, so each decoded code block serves 12 (row, token) dot products.
    // Batches go panel by panel: a panel's codes (~64 KiB) stay in L2 while each group of
    // kMaxT tokens sweeps it with its activations (~3 KiB per 2048 columns and token) in L1.
    const int rb = nt == 1 ? kDecodeRows : 2;
    const int64_t panel = nt == 1 ? row_end - row_begin
                                  : std::max<int64_t>(4, (int64_t{64} << 10) / row_bytes / 2 * 2);
    for (int64_t p0 = row_begin; p0 < row_end; p0 += panel) {
      const int64_t p1 = std::min(row_end, p0 + panel);
      for (int64_t t = 0; t < nt; t += kMaxT) {
        const int64_t tn = std::min<int64_t>(kMaxT, nt - t);
        Acts at = a;
        at.q += t * a.nb * kBlock;
        at.s += t * a.nb * 16;
        at.sum += t * a.ngp;
        for (int64_t r = p0; r < p1;) {
          const uint8_t* codes[kDecodeRows];
          const GroupScale* gs[kDecodeRows];
          int64_t rows[kDecodeRows];
          const int nr = static_cast<int>(std::min<int64_t>(rb, p1 - r));
          for (int i = 0; i < nr; ++i) {
            codes[i] = base + (r + i) * row_bytes;
            gs[i] = reinterpret_cast<const GroupScale*>(scales + (r + i) * ng * scale_bytes);
            rows[i] = r + i;
          }
          float* yr = yt + t * ldy;
          if (sym) {
            RowTiles<false, true>(nr, codes, gs, ng, cp, chunk_shift, at, tn, rows, yr, ldy);
          } else if (chunk_shift >= 2) {
            RowTiles<true, false>(nr, codes, gs, ng, cp, chunk_shift, at, tn, rows, yr, ldy);
          } else {
            RowTiles<false, false>(nr, codes, gs, ng, cp, chunk_shift, at, tn, rows, yr, ldy);
          }
          r += nr >= 4 ? 4 : nr >= 2 ? 2 : 1;
        }
      }
    }
  }
}

}  // namespace compressd::kernels
