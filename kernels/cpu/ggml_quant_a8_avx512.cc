// W4A8 / W8A8 GEMM for GGUF Q4_0 / Q8_0 blocks with AVX-512 VNNI (definition: ggml_quant.h,
// GgufUsesA8; scalar oracle: GemmGgufA8Ref in ggml_quant.cc).
//
// Why: the fp32 decode engine spends ~5 vector ops per 16 weights widening codes, which kept
// GGUF decode compute bound at 0.2x-0.7x of llama.cpp. Here the codes stay integers:
//   Q4_0: 4 blocks (128 columns) of one row are one zmm of nibbles; and/shift give their low
//         and high nibbles as u8, multiplied (vpdpbusd) with int8 activations stored in the
//         same order. Sum q*x - 8*sum x: the -8*sum x term is the accumulator's start value.
//   Q8_0: 2 blocks per zmm; the s8 codes become u8 by xor 0x80 (q + 128), and the extra
//         128*sum x is again folded into the start value.
// Every i32 lane then belongs to one block; acc += float(i32) * (d_block * s_block), with the
// 16 products of a 16-block window computed once per (row, token) and permuted into lanes.
//
// Activation layout per token (one 64-token batch prepared per call): per step of 4 blocks,
// 128 int8. Q4_0: the first 64 in "low nibble" order (block k, values 0..15 at bytes
// 16k..16k+15), the next 64 its values 16..31; Q8_0: the 4 blocks in column order.
//
// Batch invariance: every (row, token) output is the same chain of operations whatever the
// tile, n or row range.
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
#include "kernels/quant_a8_avx512.h"
#include "stream_prefetch_inl.h"

namespace compressd::kernels {
namespace {

constexpr int64_t kStep = 4;         // blocks per step (128 columns)
constexpr int64_t kWin = 16;         // blocks per scale window
constexpr int64_t kTokenBlock = 64;  // tokens whose activations are prepared together
constexpr int kMaxT = 4;             // 2 rows x 4 tokens per tile for batches

struct Acts {
  int64_t nbp = 0;                // blocks per token, rounded up to kWin
  const int8_t* q = nullptr;      // [n][nbp * 32]
  const float* s = nullptr;       // [n][nbp]: scale of each block
  const int32_t* c = nullptr;     // [n][nbp / 4][32]: accumulator start per step
  int64_t row_bytes = 0;          // blocks of a row; rows are stored back to back
  const uint8_t* end = nullptr;   // one past the last row of the call's range
};

template <bool Q8>
void PrepareActs(const float* x, int64_t n, int64_t cols, int64_t nbp, int8_t* q, float* s,
                 int32_t* c) {
  for (int64_t t = 0; t < n; ++t) {
    const float* xt = x + t * cols;
    int8_t* qt = q + t * nbp * kGgufBlock;
    float* st = s + t * nbp;
    int32_t* ct = c + t * nbp / kStep * 32;
    std::memset(ct, 0, static_cast<size_t>(nbp / kStep * 32) * sizeof(int32_t));
    for (int64_t b = 0; b < nbp; ++b) {
      const int64_t c0 = b * kGgufBlock;
      const a8::Chunk ch =
          a8::QuantizeChunk32(xt + c0, std::clamp<int64_t>(cols - c0, 0, kGgufBlock));
      const int64_t step = b / kStep, k = b % kStep;
      int8_t* qs = qt + step * 128;
      if constexpr (Q8) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + k * 32), _mm512_cvtepi32_epi8(ch.q0));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + k * 32 + 16),
                         _mm512_cvtepi32_epi8(ch.q1));
      } else {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + k * 16), _mm512_cvtepi32_epi8(ch.q0));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + 64 + k * 16),
                         _mm512_cvtepi32_epi8(ch.q1));
      }
      st[b] = ch.scale;
      const int isum = _mm512_reduce_add_epi32(_mm512_add_epi32(ch.q0, ch.q1));
      // Q4_0: lane 4k of the step's vector; Q8_0: lane 8k of the two vectors (blocks 0,1 | 2,3).
      ct[step * 32 + (Q8 ? 8 * k : 4 * k)] = (Q8 ? -128 : -8) * isum;
    }
  }
}

// Codes of blocks [blk, blk + 4) of one row (blocks past `valid` read as zero).
template <bool Q8>
inline void LoadStep(const uint8_t* row, int64_t blk, int64_t valid, __m512i* v) {
  constexpr int64_t bs = Q8 ? sizeof(GgufBlockQ8_0) : sizeof(GgufBlockQ4_0);
  const uint8_t* p = row + blk * bs + 2;  // qs of block blk
  if constexpr (Q8) {
    if (valid >= 4) {
      v[0] = _mm512_inserti64x4(
          _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))),
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + bs)), 1);
      v[1] = _mm512_inserti64x4(
          _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2 * bs))),
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 3 * bs)), 1);
    } else {
      alignas(64) uint8_t tmp[128] = {};
      for (int64_t k = 0; k < valid; ++k) std::memcpy(tmp + 32 * k, p + k * bs, 32);
      v[0] = _mm512_load_si512(tmp);
      v[1] = _mm512_load_si512(tmp + 64);
    }
  } else {
    if (valid >= 4) {
      __m512i w = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
      w = _mm512_inserti32x4(w, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + bs)), 1);
      w = _mm512_inserti32x4(w, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * bs)), 2);
      v[0] = _mm512_inserti32x4(w, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 3 * bs)),
                                3);
    } else {
      alignas(64) uint8_t tmp[64] = {};
      for (int64_t k = 0; k < valid; ++k) std::memcpy(tmp + 16 * k, p + k * bs, 16);
      v[0] = _mm512_load_si512(tmp);
    }
  }
}

// out[r][t] = row r . token t for R rows x T tokens; rows[r] points at the row's first block.
template <bool Q8, int R, int T>
void Tile(const uint8_t* const* rows, int64_t nb, const Acts& a, float (*out)[kMaxT]) {
  constexpr int bs = Q8 ? sizeof(GgufBlockQ8_0) : sizeof(GgufBlockQ4_0);
  NextTilePrefetch pf(rows[R - 1] + a.row_bytes, a.end, R * a.row_bytes);  // the rows after the tile
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  const __m512i nib = _mm512_set1_epi8(0x0f);
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  const __m512i gidx =
      _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                         _mm512_set1_epi32(bs));
  // Lane l of step k: block 4k + l/4 (Q4_0); 4k + l/8 and 4k + 2 + l/8 (Q8_0).
  const __m512i lane4 = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
  const __m512i lane8 = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  for (int64_t w0 = 0; w0 < nb; w0 += kWin) {
    const int64_t nw = std::min(kWin, nb - w0);
    const __mmask16 wm = static_cast<__mmask16>(nw >= 16 ? 0xffff : (1u << nw) - 1u);
    alignas(64) float dwin[R][T][16];
    for (int r = 0; r < R; ++r) {
      // The fp16 scale is the first 2 bytes of each block: 4-byte gathers, low halves kept.
      const __m512i g = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), wm, gidx,
                                                    rows[r] + w0 * bs, 1);
      const __m512 dv = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g));
      for (int t = 0; t < T; ++t)
        _mm512_store_ps(dwin[r][t], _mm512_mul_ps(dv, _mm512_loadu_ps(a.s + t * a.nbp + w0)));
    }
    for (int64_t k = 0; k < nw; k += kStep) {
      const int64_t blk = w0 + k;
      const __m512i kk = _mm512_set1_epi32(static_cast<int>(k));
      __m512i wv[R][2];
      pf.Step<R * kStep * bs>();
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) LoadStep<Q8>(rows[r], blk, nb - blk, wv[r]);
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        const int8_t* qx = a.q + (t * a.nbp + blk) * kGgufBlock;
        const int32_t* cx = a.c + (t * a.nbp + blk) / kStep * 32;
        const __m512i x0 = _mm512_loadu_si512(qx), x1 = _mm512_loadu_si512(qx + 64);
        const __m512i c0 = _mm512_loadu_si512(cx);
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
          const __m512 dw = _mm512_load_ps(dwin[r][t]);
          if constexpr (Q8) {
            const __m512i c1 = _mm512_loadu_si512(cx + 16);
            const __m512i i0 = _mm512_dpbusd_epi32(c0, _mm512_xor_si512(wv[r][0], flip), x0);
            const __m512i i1 = _mm512_dpbusd_epi32(c1, _mm512_xor_si512(wv[r][1], flip), x1);
            const __m512 s0 = _mm512_permutexvar_ps(_mm512_add_epi32(kk, lane8), dw);
            const __m512 s1 = _mm512_permutexvar_ps(
                _mm512_add_epi32(_mm512_add_epi32(kk, lane8), _mm512_set1_epi32(2)), dw);
            acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i0), s0, acc[r][t]);
            acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i1), s1, acc[r][t]);
          } else {
            const __m512i lo = _mm512_and_si512(wv[r][0], nib);
            const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(wv[r][0], 4), nib);
            const __m512i i = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(c0, lo, x0), hi, x1);
            const __m512 sc = _mm512_permutexvar_ps(_mm512_add_epi32(kk, lane4), dw);
            acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), sc, acc[r][t]);
          }
        }
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) out[r][t] = _mm512_reduce_add_ps(acc[r][t]);
}

template <bool Q8, int R>
void RowsTokens(const uint8_t* const* rows, int64_t nb, const Acts& a, int64_t n,
                const int64_t* ids, float* y, int64_t ldy) {
  float o[4][kMaxT];
  for (int64_t t = 0; t < n;) {
    Acts at = a;
    at.q += t * a.nbp * kGgufBlock;
    at.s += t * a.nbp;
    at.c += t * a.nbp / kStep * 32;
    // 4-row tiles are for decode (one token); wider token tiles would not fit in registers.
    const int tt = static_cast<int>(std::min<int64_t>(R == 4 ? 1 : kMaxT, n - t));
    if constexpr (R == 4) {
      Tile<Q8, 4, 1>(rows, nb, at, o);
    } else {
      switch (tt) {
        case 1: Tile<Q8, R, 1>(rows, nb, at, o); break;
        case 2: Tile<Q8, R, 2>(rows, nb, at, o); break;
        case 3: Tile<Q8, R, 3>(rows, nb, at, o); break;
        default: Tile<Q8, R, 4>(rows, nb, at, o); break;
      }
    }
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < tt; ++j) y[(t + j) * ldy + ids[r]] = o[r][j];
    t += tt;
  }
}

// ActCache::kind of this kernel's activation layouts (Q4_0 and Q8_0 orders differ).
constexpr int ActsKind(bool q8) { return q8 ? ActCache::kGgufQ8_0 : ActCache::kGgufQ4_0; }

template <bool Q8>
void Gemm(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
          int64_t row_begin, int64_t row_end, const ActCache* acts) {
  const int64_t cols = w.cols, nb = cols / kGgufBlock;
  const int64_t row_bytes = nb * (Q8 ? sizeof(GgufBlockQ8_0) : sizeof(GgufBlockQ4_0));
  const auto* base = static_cast<const uint8_t*>(w.data);
  Acts a;
  a.nbp = (nb + kWin - 1) / kWin * kWin;
  // Activations prepared once for this x (ActCache), or quantized here per token block.
  const bool shared = acts != nullptr && acts->kind == ActsKind(Q8) && acts->x == x &&
                      acts->n == n && acts->cols == cols;
  thread_local std::vector<int8_t> qbuf;
  thread_local std::vector<float> sbuf;
  thread_local std::vector<int32_t> cbuf;
  if (!shared) {
    const int64_t tb = std::min(n, kTokenBlock);
    qbuf.resize(static_cast<size_t>(tb * a.nbp * kGgufBlock));
    sbuf.resize(static_cast<size_t>(tb * a.nbp));
    cbuf.resize(static_cast<size_t>(tb * a.nbp / kStep * 32));
  }
  a.row_bytes = row_bytes;
  a.end = base + row_end * row_bytes;
  for (int64_t t0 = 0; t0 < n; t0 += kTokenBlock) {
    const int64_t nt = std::min(kTokenBlock, n - t0);
    if (shared) {
      a.q = acts->q.data() + t0 * acts->q_stride;
      a.s = acts->s.data() + t0 * acts->s_stride;
      a.c = acts->c.data() + t0 * acts->c_stride;
    } else {
      PrepareActs<Q8>(x + t0 * cols, nt, cols, a.nbp, qbuf.data(), sbuf.data(), cbuf.data());
      a.q = qbuf.data();
      a.s = sbuf.data();
      a.c = cbuf.data();
    }
    float* yt = y + t0 * ldy;
    // Decode: 4 rows per tile. Batches: 2 rows x up to 4 tokens, panel by panel so that a
    // panel's codes (~64 KiB) stay in L2 while the token groups sweep it.
    const int rb = nt == 1 ? 4 : 2;
    const int64_t panel = nt == 1 ? row_end - row_begin
                                  : std::max<int64_t>(4, (int64_t{64} << 10) / row_bytes / 2 * 2);
    for (int64_t p0 = row_begin; p0 < row_end; p0 += panel) {
      const int64_t p1 = std::min(row_end, p0 + panel);
      for (int64_t t = 0; t < nt; t += kMaxT) {
        const int64_t tn = std::min<int64_t>(kMaxT, nt - t);
        Acts at = a;
        at.q += t * a.nbp * kGgufBlock;
        at.s += t * a.nbp;
        at.c += t * a.nbp / kStep * 32;
        for (int64_t r = p0; r < p1;) {
          const uint8_t* rows[4];
          int64_t ids[4];
          const int nr = static_cast<int>(std::min<int64_t>(rb, p1 - r));
          const int take = nr >= 4 ? 4 : nr >= 2 ? 2 : 1;
          for (int i = 0; i < take; ++i) {
            rows[i] = base + (r + i) * row_bytes;
            ids[i] = r + i;
          }
          float* yr = yt + t * ldy;
          if (take == 4) {
            RowsTokens<Q8, 4>(rows, nb, at, tn, ids, yr, ldy);
          } else if (take == 2) {
            RowsTokens<Q8, 2>(rows, nb, at, tn, ids, yr, ldy);
          } else {
            RowsTokens<Q8, 1>(rows, nb, at, tn, ids, yr, ldy);
          }
          r += take;
        }
      }
    }
  }
}

}  // namespace

void GemmGgufA8Avx512(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                      int64_t row_begin, int64_t row_end) {
  GemmGgufA8Avx512Acts(w, x, n, y, ldy, row_begin, row_end, nullptr);
}

void GemmGgufA8Avx512Acts(const PackedWeight& w, const float* x, int64_t n, float* y,
                          int64_t ldy, int64_t row_begin, int64_t row_end, const ActCache* acts) {
  if (n <= 0 || row_begin >= row_end) return;
  if (w.format.variant == kGgufVariantQ8_0) {
    return Gemm<true>(w, x, n, y, ldy, row_begin, row_end, acts);
  }
  Gemm<false>(w, x, n, y, ldy, row_begin, row_end, acts);
}

void GgufA8ActsReserve(const PackedWeight& w, const float* x, int64_t n, ActCache* c) {
  const int64_t nb = w.cols / kGgufBlock, nbp = (nb + kWin - 1) / kWin * kWin;
  c->kind = ActsKind(w.format.variant == kGgufVariantQ8_0);
  c->x = x;
  c->n = n;
  c->cols = w.cols;
  c->cols_pad = nbp * kGgufBlock;
  c->group = kGgufBlock;
  c->q_stride = nbp * kGgufBlock;
  c->s_stride = nbp;
  c->c_stride = nbp / kStep * 32;
  c->q.resize(static_cast<size_t>(n * c->q_stride));
  c->s.resize(static_cast<size_t>(n * c->s_stride));
  c->c.resize(static_cast<size_t>(n * c->c_stride));
}

void GgufA8ActsFill(int64_t t_begin, int64_t t_end, ActCache* c) {
  if (t_begin >= t_end) return;
  const int64_t nbp = c->s_stride;
  int8_t* q = c->q.data() + t_begin * c->q_stride;
  float* s = c->s.data() + t_begin * c->s_stride;
  int32_t* cc = c->c.data() + t_begin * c->c_stride;
  const float* x = c->x + t_begin * c->cols;
  if (c->kind == ActsKind(true)) {
    PrepareActs<true>(x, t_end - t_begin, c->cols, nbp, q, s, cc);
  } else if (c->kind == ActsKind(false)) {
    PrepareActs<false>(x, t_end - t_begin, c->cols, nbp, q, s, cc);
  }
}

}  // namespace compressd::kernels
