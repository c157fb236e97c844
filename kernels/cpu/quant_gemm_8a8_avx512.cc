// W8A8-chunk GEMM/GEMV for 8-bit group formats (u8 codes, fp16 scale + min per group) and
// per-row int8 (kInt8Row: s8 codes, fp32 row scale) with AVX-512 VNNI; 3- and 2-bit group
// codes take the same kernel, unpacked to u8 per 64-column block (LoadBlock: ~5 ops per 64
// weights, where the float path spent ~15 per 32: int3-g64 GEMV 2.7x, docs/BENCHMARKS.md). Definition: quant.h,
// QuantUsesA8; scalar oracle: GemmQuantA8Ref (quant_a8_ref.cc).
//
// Why: decoding 8-bit codes to fp32 (widen, convert, FMA per 16 weights) made the float path
// compute bound at ~38 GB/s on 2 threads, below DRAM bandwidth. Here one 64-byte load holds
// two 32-value chunks, and one vpdpbusd multiplies them with the token's int8 activations.
//
// Per 64-column block b (int32 lane l covers columns 4l..4l+3, i.e. chunk 2b + l/8) and
// (row r, token t):
//   group: i32 = dpbusd(0, codes_r, q_t)                 (codes are u8 already)
//          acc[r][t] += float(i32) * (d_lane_r * s_lane_t)
//          and once per 16 groups acc[r][t] += min[16] * xsum_t[16]
//   row:   i32 = dpbusd(bias_t, codes_r ^ 0x80, q_t)      (codes + 128 as u8; bias_t lane =
//          -128 * (sum of the lane's 4 activations) removes the offset exactly in int32)
//          acc[r][t] += float(i32) * s_lane_t;  y = row_scale * sum(acc)
// y[t][r] = sum of the 16 lanes of acc[r][t] (times the row scale for kInt8Row).
//
// GGUF Q8_0 in its split layout (kLayoutGgufSplit, ggml_quant.h) runs here as 8-bit group 32
// whose scales are fp16 d alone: codes are q + 128, min = -128 d (SYM).
//
// Activation layout per token (built once per call): q [nb][64] in column order (the order
// of the code bytes), s [nb][16] (lanes 0-7: scale of chunk 2b, 8-15: chunk 2b+1), and bias
// [nb][16] (kInt8Row) or xsum [groups] (group formats).
//
// Batch invariance: every (row, token) output is the same chain of operations whatever the
// tile (R rows x T tokens), n or row range, so a token's result does not depend on the rest
// of the batch.
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

constexpr int64_t kBlock = 64;       // columns per 64-byte code block (two chunks)
constexpr int64_t kTokenBlock = 64;  // tokens whose activations are prepared together
constexpr int kMaxT = 6;             // 2 rows x 6 tokens in batches
// 8-bit decode tiles too large for NextTilePrefetch (long rows) prefetch each row this far
// ahead of itself, as the A16 kernel does (quant_gemm_8a16_avx512.cc).
constexpr int64_t kRowAhead = 1024;

// kRow: kInt8Row. kGroupWide: group >= 64 (a block lies in one group: the group scale is a
// broadcast). kGroup32: group 32 (a block spans two groups: lanes 0-7 and 8-15).
enum class Mode { kRow, kGroupWide, kGroup32 };

struct Acts {
  int64_t nb = 0;                // blocks per token
  int64_t ngp = 0;               // groups per token, rounded up to 16 (group formats)
  const int8_t* q = nullptr;     // [n][nb][64]
  const float* s = nullptr;      // [n][nb][16]
  const int32_t* bias = nullptr;  // kRow: [n][nb][16]
  const float* sum = nullptr;     // group formats: [n][ngp], sum of x^ over each group
  int64_t row_bytes = 0;          // codes per row; rows are stored back to back
  const uint8_t* end = nullptr;   // one past the last row of the call's range
  const uint8_t* s_end = nullptr;  // group formats: one past the last row's group scales
};

// Quantizes n tokens; same arithmetic as QuantizeChunksQ8 (the reference).
void PrepareActs(const float* x, int64_t n, int64_t cols, bool row, int chunk_shift, int8_t* q,
                 float* s, int32_t* bias, float* sum, int64_t nb, int64_t ngp) {
  const __m512i u128 = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t t = 0; t < n; ++t) {
    const float* xt = x + t * cols;
    int8_t* qt = q + t * nb * kBlock;
    float* st = s + t * nb * 16;
    float* sumt = row ? nullptr : sum + t * ngp;
    if (!row) std::memset(sumt, 0, static_cast<size_t>(ngp) * sizeof(float));
    for (int64_t c = 0; c < nb * 2; ++c) {
      const int64_t c0 = c * kQuantChunk;
      const a8::Chunk ch =
          a8::QuantizeChunk32(xt + c0, std::clamp<int64_t>(cols - c0, 0, kQuantChunk));
      const __m512i q0 = ch.q0, q1 = ch.q1;
      const float sc = ch.scale;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qt + c0), _mm512_cvtepi32_epi8(q0));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qt + c0 + 16), _mm512_cvtepi32_epi8(q1));
      _mm256_storeu_ps(st + c * 8, _mm256_set1_ps(sc));
      if (!row) {
        const int isum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        sumt[c >> chunk_shift] += sc * static_cast<float>(isum);
      }
    }
    if (row) {
      int32_t* bt = bias + t * nb * 16;
      for (int64_t b = 0; b < nb; ++b) {
        const __m512i qv = _mm512_loadu_si512(qt + b * kBlock);
        const __m512i pos = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u128, qv);
        _mm512_storeu_si512(bt + b * 16, _mm512_sub_epi32(_mm512_setzero_si512(), pos));
      }
    }
  }
}

// One 64-column block of codes as 64 u8 values in column order. 8-bit: the 64 bytes.
// 3-/2-bit (the float path's layout, quant.h): per 32-column chunk, 8 bytes hold the low two
// bits of value j at byte j % 8, bits 2 (j / 8); 3-bit adds 4 bytes with bit j = value j's
// third bit. Each chunk's 8 bytes go to 4 qwords, shifted right by 0/2/4/6 and masked.
template <int BITS>
inline __m512i LoadBlock(const uint8_t* codes, int64_t b) {
  if constexpr (BITS == 8) {
    return _mm512_loadu_si512(codes + b * kBlock);
  } else {
    constexpr int64_t cb = BITS == 3 ? 12 : 8;  // bytes per chunk
    const uint8_t* p = codes + b * 2 * cb;
    uint64_t l0, l1;
    std::memcpy(&l0, p, 8);
    std::memcpy(&l1, p + cb, 8);
    const __m512i v = _mm512_permutexvar_epi64(
        _mm512_set_epi64(1, 1, 1, 1, 0, 0, 0, 0),
        _mm512_castsi128_si512(_mm_set_epi64x(static_cast<long long>(l1), static_cast<long long>(l0))));
    __m512i q = _mm512_and_si512(_mm512_srlv_epi64(v, _mm512_set_epi64(6, 4, 2, 0, 6, 4, 2, 0)),
                                 _mm512_set1_epi8(3));
    if constexpr (BITS == 3) {
      uint32_t h0, h1;
      std::memcpy(&h0, p + 8, 4);
      std::memcpy(&h1, p + cb + 8, 4);
      const __mmask64 hm = static_cast<__mmask64>(h0) | (static_cast<__mmask64>(h1) << 32);
      q = _mm512_mask_add_epi8(q, hm, q, _mm512_set1_epi8(4));
    }
    return q;
  }
}

// Bytes of one group's scales: GroupScale, or fp16 d alone (SYM).
template <bool SYM>
constexpr int64_t kScaleBytes = SYM ? 2 : static_cast<int64_t>(sizeof(GroupScale));

// out[r][t] = row r . token t for R rows x T tokens (before the row scale of kRow).
// gs[r]: row r's group scales (kScaleBytes<SYM> each). SYM: GGUF Q8_0's split layout,
// min = -128 d.
template <int BITS, Mode M, bool SYM, int R, int T>
void Tile(const uint8_t* const* codes, const uint8_t* const* gs, int64_t ng, int chunk_shift,
          const Acts& a, float (*out)[kMaxT]) {
  constexpr int64_t kSB = kScaleBytes<SYM>;
  NextTilePrefetch pf(codes[R - 1] + a.row_bytes, a.end, R * a.row_bytes);  // the rows after the tile
  const bool row_ahead = R * a.row_bytes > NextTilePrefetch::kMaxTileBytes;
  // Group scales: a second sequential stream, one window of 16 per row and step (as in
  // quant_gemm_a8_avx512.cc).
  NextTilePrefetch spf;
  if constexpr (M != Mode::kRow) {
    spf = NextTilePrefetch(gs[R - 1] + ng * kSB, a.s_end, R * ng * kSB);
  }
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  const int64_t nb = a.nb;
  // Blocks per 16-group window (the whole row for kRow).
  const int64_t bpw = M == Mode::kRow ? nb : (int64_t{16} << chunk_shift) / 2;
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  const __m512i lane_chunk = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  for (int64_t win = 0, b0 = 0; b0 < nb; ++win, b0 += bpw) {
    const int64_t b1 = std::min(nb, b0 + bpw);
    __m512 dv[R];
    alignas(64) float dsc[R][16];
    if constexpr (M != Mode::kRow) {
      const int64_t gleft = ng - 16 * win;
      const __mmask16 gm = static_cast<__mmask16>(gleft >= 16 ? 0xffff : (1u << gleft) - 1u);
      spf.Step<R * 16 * kSB>();
      for (int r = 0; r < R; ++r) {
        __m512 mv;
        if constexpr (SYM) {
          dv[r] = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(gm, gs[r] + 16 * win * kSB));
          mv = _mm512_mul_ps(dv[r], _mm512_set1_ps(-128.0f));  // exact: a power of two
        } else {
          const __m512i p = _mm512_maskz_loadu_epi32(gm, gs[r] + 16 * win * kSB);
          dv[r] = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(p));
          mv = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(p, 16)));
        }
        if constexpr (M == Mode::kGroupWide) _mm512_store_ps(dsc[r], dv[r]);
        for (int t = 0; t < T; ++t) {
          acc[r][t] =
              _mm512_fmadd_ps(mv, _mm512_loadu_ps(a.sum + t * a.ngp + 16 * win), acc[r][t]);
        }
      }
    }
    for (int64_t b = b0; b < b1; ++b) {
      __m512i wv[R];
      __m512 dl[R];
      __m512i idx;
      if constexpr (M == Mode::kGroup32) {
        idx = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(2 * (b - b0))), lane_chunk);
      }
      pf.Step<R * BITS * 8>();
      if constexpr (BITS == 8 && T == 1) {
        if (row_ahead) {
          for (int r = 0; r < R; ++r) {
            _mm_prefetch(reinterpret_cast<const char*>(codes[r] + b * kBlock + kRowAhead),
                         _MM_HINT_T0);
          }
        }
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        wv[r] = LoadBlock<BITS>(codes[r], b);
        if constexpr (M == Mode::kRow) wv[r] = _mm512_xor_si512(wv[r], flip);
        if constexpr (M == Mode::kGroupWide) {
          dl[r] = _mm512_set1_ps(dsc[r][((2 * b) >> chunk_shift) - 16 * win]);
        } else if constexpr (M == Mode::kGroup32) {
          dl[r] = _mm512_permutexvar_ps(idx, dv[r]);
        }
      }
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        const int64_t tb = t * nb + b;
        const __m512i xq = _mm512_loadu_si512(a.q + tb * kBlock);
        const __m512 xs = _mm512_loadu_ps(a.s + tb * 16);
        const __m512i init =
            M == Mode::kRow ? _mm512_loadu_si512(a.bias + tb * 16) : _mm512_setzero_si512();
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          const __m512 d = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(init, wv[r], xq));
          const __m512 sc = M == Mode::kRow ? xs : _mm512_mul_ps(dl[r], xs);
          acc[r][t] = _mm512_fmadd_ps(d, sc, acc[r][t]);
        }
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) out[r][t] = _mm512_reduce_add_ps(acc[r][t]);
}

struct RowSet {
  const uint8_t* codes[8];
  const uint8_t* gs[8];
  float rs[8];  // kRow: row scales
  int64_t rows[8];
};

// R rows over tokens [0, n) of `a`, in tiles of R rows x up to kMaxT tokens (1 when R > 2).
template <int BITS, Mode M, bool SYM, int R>
void RowsAllTokens(const RowSet& rset, int64_t ng, int chunk_shift, const Acts& a, int64_t n,
                   float* y, int64_t ldy) {
  for (int64_t t = 0; t < n;) {
    Acts at = a;
    at.q += t * a.nb * kBlock;
    at.s += t * a.nb * 16;
    if constexpr (M == Mode::kRow) {
      at.bias += t * a.nb * 16;
    } else {
      at.sum += t * a.ngp;
    }
    float o[R][kMaxT];
    const int tt = static_cast<int>(std::min<int64_t>(R > 2 ? 1 : kMaxT, n - t));
    if constexpr (R > 2) {
      Tile<BITS, M, SYM, R, 1>(rset.codes, rset.gs, ng, chunk_shift, at, o);
    } else {
      switch (tt) {
        case 1: Tile<BITS, M, SYM, R, 1>(rset.codes, rset.gs, ng, chunk_shift, at, o); break;
        case 2: Tile<BITS, M, SYM, R, 2>(rset.codes, rset.gs, ng, chunk_shift, at, o); break;
        case 3: Tile<BITS, M, SYM, R, 3>(rset.codes, rset.gs, ng, chunk_shift, at, o); break;
        case 4: Tile<BITS, M, SYM, R, 4>(rset.codes, rset.gs, ng, chunk_shift, at, o); break;
        case 5: Tile<BITS, M, SYM, R, 5>(rset.codes, rset.gs, ng, chunk_shift, at, o); break;
        default: Tile<BITS, M, SYM, R, 6>(rset.codes, rset.gs, ng, chunk_shift, at, o); break;
      }
    }
    for (int r = 0; r < R; ++r) {
      for (int j = 0; j < tt; ++j) {
        y[(t + j) * ldy + rset.rows[r]] = M == Mode::kRow ? o[r][j] * rset.rs[r] : o[r][j];
      }
    }
    t += tt;
  }
}

int Log2(int64_t v) {
  int s = 0;
  while ((int64_t{1} << s) < v) ++s;
  return s;
}

template <int BITS, Mode M, bool SYM = false>
void Run(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
         int64_t row_begin, int64_t row_end, const ActCache* acts) {
  const WeightFormat& f = w.format;
  const int64_t cols = w.cols, cp = QuantPaddedCols(f, cols);
  const int64_t ng = M == Mode::kRow ? 1 : cp / f.group_size;
  const int chunk_shift = M == Mode::kRow ? 0 : Log2(f.group_size) - 5;
  const int64_t row_bytes = cp / kQuantChunk * (BITS * 4);
  const auto* base = static_cast<const uint8_t*>(w.data);
  // Group scales: GroupScale [rows][ng], or for GGUF Q8_0's split layout fp16 d [rows][ng]
  // after the codes (ggml_quant.h).
  constexpr int64_t kSB = kScaleBytes<SYM>;
  const auto* scales = SYM ? base + w.rows * row_bytes : static_cast<const uint8_t*>(w.aux[0]);
  const auto* row_scales = static_cast<const float*>(w.aux[0]);

  Acts a;
  a.nb = cp / kBlock;
  a.ngp = (ng + 15) / 16 * 16;
  // Group formats: activations prepared once for this x (ActCache), or quantized here per
  // token block.
  const bool shared = M != Mode::kRow && acts != nullptr &&
                      acts->kind == ActCache::kQuant8A8 && acts->x == x && acts->n == n &&
                      acts->cols == cols && acts->cols_pad == cp && acts->group == f.group_size;
  const int64_t tb = std::min(n, kTokenBlock);
  thread_local std::vector<int8_t> qbuf;
  thread_local std::vector<float> sbuf;
  thread_local std::vector<int32_t> biasbuf;
  thread_local std::vector<float> sumbuf;
  if (!shared) {
    qbuf.resize(static_cast<size_t>(tb * a.nb * kBlock));
    sbuf.resize(static_cast<size_t>(tb * a.nb * 16));
    biasbuf.resize(static_cast<size_t>(M == Mode::kRow ? tb * a.nb * 16 : 0));
    sumbuf.resize(static_cast<size_t>(M == Mode::kRow ? 0 : tb * a.ngp));
  }
  a.bias = biasbuf.data();
  a.row_bytes = row_bytes;
  a.end = base + row_end * row_bytes;
  if (M != Mode::kRow) a.s_end = scales + row_end * ng * kSB;

  for (int64_t t0 = 0; t0 < n; t0 += kTokenBlock) {
    const int64_t nt = std::min(kTokenBlock, n - t0);
    if (shared) {
      a.q = acts->q.data() + t0 * acts->q_stride;
      a.s = acts->s.data() + t0 * acts->s_stride;
      a.sum = acts->sum.data() + t0 * acts->sum_stride;
    } else {
      PrepareActs(x + t0 * cols, nt, cols, M == Mode::kRow, chunk_shift, qbuf.data(),
                  sbuf.data(), biasbuf.data(), sumbuf.data(), a.nb, a.ngp);
      a.q = qbuf.data();
      a.s = sbuf.data();
      a.sum = sumbuf.data();
    }
    float* yt = y + t0 * ldy;
    // Decode (nt == 1): 4 rows per tile. Batches: 2 rows x up to 6 tokens, panel by panel so
    // that a panel's codes (~64 KiB) stay in L2 while each group of kMaxT tokens sweeps it.
    const int rb = nt == 1 ? 4 : 2;
    const int64_t panel = nt == 1 ? row_end - row_begin
                                  : std::max<int64_t>(4, (int64_t{64} << 10) / row_bytes / 2 * 2);
    for (int64_t p0 = row_begin; p0 < row_end; p0 += panel) {
      const int64_t p1 = std::min(row_end, p0 + panel);
      for (int64_t t = 0; t < nt; t += kMaxT) {
        const int64_t tn = std::min<int64_t>(kMaxT, nt - t);
        Acts at = a;
        at.q += t * a.nb * kBlock;
        at.s += t * a.nb * 16;
        if constexpr (M == Mode::kRow) {
          at.bias += t * a.nb * 16;
        } else {
          at.sum += t * a.ngp;
        }
        for (int64_t r = p0; r < p1;) {
          RowSet rs;
          const int nr = static_cast<int>(std::min<int64_t>(rb, p1 - r));
          for (int i = 0; i < nr; ++i) {
            rs.codes[i] = base + (r + i) * row_bytes;
            rs.gs[i] = M == Mode::kRow ? nullptr : scales + (r + i) * ng * kSB;
            rs.rs[i] = M == Mode::kRow ? row_scales[r + i] : 1.0f;
            rs.rows[i] = r + i;
          }
          float* yr = yt + t * ldy;
          if (nr == 4) {
            RowsAllTokens<BITS, M, SYM, 4>(rs, ng, chunk_shift, at, tn, yr, ldy);
          } else if (nr >= 2) {
            RowsAllTokens<BITS, M, SYM, 2>(rs, ng, chunk_shift, at, tn, yr, ldy);
          } else {
            RowsAllTokens<BITS, M, SYM, 1>(rs, ng, chunk_shift, at, tn, yr, ldy);
          }
          r += nr >= 4 ? 4 : nr >= 2 ? 2 : 1;
        }
      }
    }
  }
}

}  // namespace

void Quant8A8ActsReserve(const PackedWeight& w, const float* x, int64_t n, ActCache* c) {
  const WeightFormat& f = w.format;
  const int64_t cp = QuantPaddedCols(f, w.cols);
  const int64_t nb = cp / kBlock, ngp = (cp / f.group_size + 15) / 16 * 16;
  c->kind = ActCache::kQuant8A8;
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

void Quant8A8ActsFill(int64_t t_begin, int64_t t_end, ActCache* c) {
  if (c->kind != ActCache::kQuant8A8 || t_begin >= t_end) return;
  PrepareActs(c->x + t_begin * c->cols, t_end - t_begin, c->cols, /*row=*/false,
              Log2(c->group) - 5, c->q.data() + t_begin * c->q_stride,
              c->s.data() + t_begin * c->s_stride, nullptr,
              c->sum.data() + t_begin * c->sum_stride, c->q_stride / kBlock, c->sum_stride);
}

void GemmQuant8A8Avx512(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                        int64_t row_begin, int64_t row_end) {
  GemmQuant8A8Avx512Acts(w, x, n, y, ldy, row_begin, row_end, nullptr);
}

void GemmQuant8A8Avx512Acts(const PackedWeight& w, const float* x, int64_t n, float* y,
                            int64_t ldy, int64_t row_begin, int64_t row_end,
                            const ActCache* acts) {
  if (n <= 0 || row_begin >= row_end) return;
  if (static_cast<QuantVariant>(w.format.variant) == QuantVariant::kInt8Row) {
    return Run<8, Mode::kRow>(w, x, n, y, ldy, row_begin, row_end, nullptr);
  }
  if (w.format.variant == kGgufVariantQ8_0) {
    return Run<8, Mode::kGroup32, true>(w, x, n, y, ldy, row_begin, row_end, acts);
  }
  const bool g32 = w.format.group_size == kQuantChunk;
  switch (w.format.bits) {
    case 8:
      return g32 ? Run<8, Mode::kGroup32>(w, x, n, y, ldy, row_begin, row_end, acts)
                 : Run<8, Mode::kGroupWide>(w, x, n, y, ldy, row_begin, row_end, acts);
    case 3:
      return g32 ? Run<3, Mode::kGroup32>(w, x, n, y, ldy, row_begin, row_end, acts)
                 : Run<3, Mode::kGroupWide>(w, x, n, y, ldy, row_begin, row_end, acts);
    case 2:
      return g32 ? Run<2, Mode::kGroup32>(w, x, n, y, ldy, row_begin, row_end, acts)
                 : Run<2, Mode::kGroupWide>(w, x, n, y, ldy, row_begin, row_end, acts);
    default:
      return;
  }
}

}  // namespace compressd::kernels
