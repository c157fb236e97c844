// AVX-512 fused dequantize-and-multiply for the quantized formats.
//
// Group formats (int2/3/4/8 asymmetric, SpQR base, MixLLM rows): a chunk of 32 codes is
// decoded into two zmm of fp32 (load + zero-extend + shift/mask, see the layouts in
// kernels/quant.h), turned into weights with one FMA per vector (code * scale + min of its
// group) and multiplied into an R-rows x T-tokens tile of accumulators. Each decoded weight
// vector is reused by T tokens, each activation vector by R rows.
// On a CPU with VNNI, 4-bit group codes go to the W4A8 kernel (quant_gemm_a8_avx512.cc),
// 8-, 3- and 2-bit group codes to the W8A8-chunk kernel (quant_gemm_8a8_avx512.cc); this float path
// remains for CPUs without VNNI, group 16 (SpQR), MixLLM rows (per-row int8: A16, QuantUsesA16).
// W8A8 / LLM.int8: activations are quantized per token to int8 (stored as u8 = q + 128) and
// multiplied with vpdpbusd; the +128 offset is removed with the row's code sum.
//
// Batch invariance: every (row, token) dot product is one accumulator chain over the
// columns in the same order, and the same instructions whatever R, T, n or the row range
// are; so y[t][r] does not depend on which other tokens or rows share the call.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/quant.h"
#include "stream_prefetch_inl.h"

namespace compressd::kernels {
namespace {

using namespace quant_internal;

constexpr int kS8Row = -8;  // signed int8 codes, one scale per row (applied after the dot)
constexpr int64_t kTokenBlock = 64;
// Decode tiles too large for NextTilePrefetch (8 rows of 8192 int8 columns: 64 KiB) prefetch
// each of their rows this far ahead instead (BM_QuantGemm int8 2048x8192, 2 threads:
// 37.7-47.4 -> 53.5-58.7 GB/s in 2 of 3 alternating runs, 2026-11-23).
constexpr int64_t kRowAhead = 1024;

template <int BITS>
inline void DecodeChunk(const uint8_t* p, __m512& v0, __m512& v1) {
  if constexpr (BITS == 4) {
    const __m512i i = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    v0 = _mm512_cvtepi32_ps(_mm512_and_si512(i, _mm512_set1_epi32(15)));
    v1 = _mm512_cvtepi32_ps(_mm512_srli_epi32(i, 4));
  } else if constexpr (BITS == 2 || BITS == 3) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    const __m512i i = _mm512_cvtepu8_epi32(_mm_unpacklo_epi64(b, b));
    const __m512i sh0 = _mm512_set_epi32(2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i sh1 = _mm512_set_epi32(6, 6, 6, 6, 6, 6, 6, 6, 4, 4, 4, 4, 4, 4, 4, 4);
    const __m512i three = _mm512_set1_epi32(3);
    __m512i a = _mm512_and_si512(_mm512_srlv_epi32(i, sh0), three);
    __m512i c = _mm512_and_si512(_mm512_srlv_epi32(i, sh1), three);
    if constexpr (BITS == 3) {
      uint32_t hi;
      std::memcpy(&hi, p + 8, 4);
      const __m512i four = _mm512_set1_epi32(4);
      a = _mm512_mask_add_epi32(a, static_cast<__mmask16>(hi & 0xffff), a, four);
      c = _mm512_mask_add_epi32(c, static_cast<__mmask16>(hi >> 16), c, four);
    }
    v0 = _mm512_cvtepi32_ps(a);
    v1 = _mm512_cvtepi32_ps(c);
  } else if constexpr (BITS == 8) {
    v0 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
    v1 = _mm512_cvtepi32_ps(
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16))));
  } else {  // kS8Row
    v0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
    v1 = _mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16))));
  }
}

constexpr int64_t Bytes32(int bits) { return bits == kS8Row ? 32 : (bits == 4 ? 16 : bits == 3 ? 12 : bits == 2 ? 8 : 32); }

// out[r][t] = dot over cp columns of row r's weights and token t's activations.
// `pf`: the decode tile's prefetch of the rows after it (default: none).
template <int BITS, int R, int T, bool PF = false, bool ROWPF = false>
void Tile(const uint8_t* const* codes, const float* const* s, const float* const* m, int gshift,
          int64_t cp, const float* x, int64_t ldx, float (*out)[4], NextTilePrefetch pf = {}) {
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  constexpr int64_t cb = Bytes32(BITS);
  for (int64_t c = 0, k = 0; c < cp; c += 32, ++k) {
    __m512 x0[T], x1[T];
    for (int t = 0; t < T; ++t) {
      x0[t] = _mm512_loadu_ps(x + t * ldx + c);
      x1[t] = _mm512_loadu_ps(x + t * ldx + c + 16);
    }
    if constexpr (PF) pf.Step<R * cb>();
    if constexpr (ROWPF) {  // one line per row each time the row's reads cross a line
      if (((k * cb) >> 6) != (((k + 1) * cb) >> 6)) {
        for (int r = 0; r < R; ++r) {
          _mm_prefetch(reinterpret_cast<const char*>(codes[r] + (k + 1) * cb + kRowAhead),
                       _MM_HINT_T0);
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      __m512 v0, v1;
      DecodeChunk<BITS>(codes[r] + k * cb, v0, v1);
      if constexpr (BITS != kS8Row) {
        const int64_t g0 = c >> gshift, g1 = (c + 16) >> gshift;
        v0 = _mm512_fmadd_ps(v0, _mm512_set1_ps(s[r][g0]), _mm512_set1_ps(m[r][g0]));
        v1 = _mm512_fmadd_ps(v1, _mm512_set1_ps(s[r][g1]), _mm512_set1_ps(m[r][g1]));
      }
      for (int t = 0; t < T; ++t) {
        acc[r][t] = _mm512_fmadd_ps(v0, x0[t], acc[r][t]);
        acc[r][t] = _mm512_fmadd_ps(v1, x1[t], acc[r][t]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) out[r][t] = _mm512_reduce_add_ps(acc[r][t]);
}

template <int BITS, int R>
void RowsAllTokens(const uint8_t* const* codes, const float* const* s, const float* const* m,
                   int gshift, int64_t cp, const float* x, int64_t n, float (*out)[4],
                   const int64_t* rows, const float* row_scale, float* y, int64_t ldy) {
  for (int64_t t = 0; t < n;) {
    const int64_t left = n - t;
    float o[8][4];
    int tt;
    if (left >= 4) {
      Tile<BITS, R, 4>(codes, s, m, gshift, cp, x + t * cp, cp, o);
      tt = 4;
    } else if (left == 3) {
      Tile<BITS, R, 3>(codes, s, m, gshift, cp, x + t * cp, cp, o);
      tt = 3;
    } else if (left == 2) {
      Tile<BITS, R, 2>(codes, s, m, gshift, cp, x + t * cp, cp, o);
      tt = 2;
    } else {
      Tile<BITS, R, 1>(codes, s, m, gshift, cp, x + t * cp, cp, o);
      tt = 1;
    }
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < tt; ++j)
        y[(t + j) * ldy + rows[r]] = row_scale ? o[r][j] * row_scale[r] : o[r][j];
    t += tt;
  }
  (void)out;
}

template <int BITS>
void RowTile(int nr, const uint8_t* const* codes, const float* const* s, const float* const* m,
             int gshift, int64_t cp, const float* x, int64_t n, const int64_t* rows,
             const float* row_scale, float* y, int64_t ldy, NextTilePrefetch pf) {
  if (n == 1 && nr == 8) {
    float o[8][4];
    if (8 * cp / 32 * Bytes32(BITS) > NextTilePrefetch::kMaxTileBytes) {
      Tile<BITS, 8, 1, false, true>(codes, s, m, gshift, cp, x, cp, o, pf);
    } else {
      Tile<BITS, 8, 1, true>(codes, s, m, gshift, cp, x, cp, o, pf);
    }
    for (int r = 0; r < 8; ++r) y[rows[r]] = row_scale ? o[r][0] * row_scale[r] : o[r][0];
    return;
  }
  for (int r0 = 0; r0 < nr;) {
    const int left = nr - r0;
    if (left >= 4) {
      RowsAllTokens<BITS, 4>(codes + r0, s + r0, m + r0, gshift, cp, x, n, nullptr, rows + r0,
                             row_scale ? row_scale + r0 : nullptr, y, ldy);
      r0 += 4;
    } else {
      RowsAllTokens<BITS, 1>(codes + r0, s + r0, m + r0, gshift, cp, x, n, nullptr, rows + r0,
                             row_scale ? row_scale + r0 : nullptr, y, ldy);
      r0 += 1;
    }
  }
}

void DispatchTile(int bits, int nr, const uint8_t* const* codes, const float* const* s,
                  const float* const* m, int gshift, int64_t cp, const float* x, int64_t n,
                  const int64_t* rows, const float* row_scale, float* y, int64_t ldy,
                  NextTilePrefetch pf) {
  switch (bits) {
    case 2: return RowTile<2>(nr, codes, s, m, gshift, cp, x, n, rows, row_scale, y, ldy, pf);
    case 3: return RowTile<3>(nr, codes, s, m, gshift, cp, x, n, rows, row_scale, y, ldy, pf);
    case 4: return RowTile<4>(nr, codes, s, m, gshift, cp, x, n, rows, row_scale, y, ldy, pf);
    case 8: return RowTile<8>(nr, codes, s, m, gshift, cp, x, n, rows, row_scale, y, ldy, pf);
    case kS8Row:
      return RowTile<kS8Row>(nr, codes, s, m, gshift, cp, x, n, rows, row_scale, y, ldy, pf);
    default: return;
  }
}

// Activations padded to cp columns (zeros), for n tokens; points at x itself when cols == cp.
const float* PadActivations(const float* x, int64_t n, int64_t cols, int64_t cp,
                            std::vector<float>* buf) {
  if (cols == cp) return x;
  buf->assign(static_cast<size_t>(n * cp), 0.0f);
  for (int64_t t = 0; t < n; ++t) std::memcpy(buf->data() + t * cp, x + t * cols, cols * 4);
  return buf->data();
}

int Log2(int64_t v) {
  int s = 0;
  while ((int64_t{1} << s) < v) ++s;
  return s;
}

// RowGroupParams for the fp16 (scale, min) pairs of group formats (all but SpQR), 16 groups
// per conversion: the scalar version was ~1/3 of an int3-g64 decode on 576-column rows.
void GroupParams(const GroupScale* gs, int64_t ng, float* scale, float* min) {
  for (int64_t g = 0; g < ng; g += 16) {
    const int64_t left = std::min<int64_t>(16, ng - g);
    const __mmask16 k = static_cast<__mmask16>(left >= 16 ? 0xffff : (1u << left) - 1u);
    const __m512i p = _mm512_maskz_loadu_epi32(k, gs + g);
    _mm512_mask_storeu_ps(scale + g, k, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(p)));
    _mm512_mask_storeu_ps(min + g, k,
                          _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(p, 16))));
  }
}

void GemmFloatPath(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                   int64_t row_begin, int64_t row_end) {
  const WeightFormat& f = w.format;
  const auto v = static_cast<QuantVariant>(f.variant);
  const int64_t cols = w.cols, cp = QuantPaddedCols(f, cols);
  thread_local std::vector<float> xbuf, params;
  const bool int8row = v == QuantVariant::kInt8Row;
  const int64_t g = int8row ? cp : f.group_size, ng = cp / g;
  const int gshift = Log2(g);
  const float* xp = PadActivations(x, n, cols, cp, &xbuf);
  constexpr int kMaxR = 8;
  params.resize(static_cast<size_t>(2 * kMaxR * ng));
  const auto* row_scales = int8row ? static_cast<const float*>(w.aux[0]) : nullptr;
  // Row r's codes: fixed-width formats are one multiply away (no call per row); kMixed rows
  // have their own widths and offsets.
  const bool mixed = v == QuantVariant::kMixed;
  const auto* base = static_cast<const uint8_t*>(w.data);
  const int64_t row_bytes = mixed ? 0 : cp / kQuantChunk * ChunkBytes(f.bits);
  auto row_codes = [&](int64_t r) -> RowView {
    return mixed ? RowCodes(w, r) : RowView{base + r * row_bytes, f.bits};
  };
  // One past the codes of the range's last row: where decode prefetching stops.
  const RowView last = row_codes(row_end - 1);
  const uint8_t* const range_end = last.codes + cp / 32 * Bytes32(int8row ? kS8Row : last.bits);
  for (int64_t t0 = 0; t0 < n; t0 += kTokenBlock) {
    const int64_t nt = std::min(kTokenBlock, n - t0);
    const float* xt = xp + t0 * cp;
    float* yt = y + t0 * ldy;
    for (int64_t r = row_begin; r < row_end;) {
      // Gather up to 8 consecutive rows with the same code width.
      const uint8_t* codes[kMaxR];
      const float* sp[kMaxR];
      const float* mp[kMaxR];
      int64_t rows[kMaxR];
      float rs[kMaxR];
      const RowView first = row_codes(r);
      int nr = 0;
      const int limit = (nt == 1) ? 8 : 4;
      while (r < row_end && nr < limit) {
        const RowView rv = row_codes(r);
        if (rv.bits != first.bits) break;
        codes[nr] = rv.codes;
        rows[nr] = r;
        if (int8row) {
          rs[nr] = row_scales[r];
        } else if (v == QuantVariant::kSpqr) {
          float* sv = params.data() + 2 * nr * ng;
          RowGroupParams(w, r, sv, sv + ng);
        } else {
          float* sv = params.data() + 2 * nr * ng;
          GroupParams(static_cast<const GroupScale*>(w.aux[0]) + r * ng, ng, sv, sv + ng);
        }
        sp[nr] = params.data() + 2 * nr * ng;
        mp[nr] = params.data() + 2 * nr * ng + ng;
        ++nr;
        ++r;
      }
      // Decode: prefetch the next rows' codes (up to the range's last row) as one stream.
      NextTilePrefetch pf;
      if (nt == 1 && r < row_end) {
        pf = NextTilePrefetch(row_codes(r).codes, range_end,
                              nr * cp / 32 * Bytes32(int8row ? kS8Row : first.bits));
      }
      DispatchTile(int8row ? kS8Row : first.bits, nr, codes, sp, mp, gshift, cp, xt, nt, rows,
                   int8row ? rs : nullptr, yt, ldy, pf);
      if (v == QuantVariant::kSpqr) {
        for (int i = 0; i < nr; ++i) AddRowCorrections(w, rows[i], x + t0 * cols, cols, nt, yt, ldy);
      }
    }
  }
}

// W8A8 / LLM.int8 with vpdpbusd.
template <int R, int T>
void DotTile(const int8_t* const* wr, const uint8_t* xq, int64_t cp, int32_t (*out)[4]) {
  __m512i acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_si512();
  for (int64_t c = 0; c < cp; c += 64) {
    __m512i xv[T];
    for (int t = 0; t < T; ++t) xv[t] = _mm512_loadu_si512(xq + t * cp + c);
    for (int r = 0; r < R; ++r) {
      const __m512i wv = _mm512_loadu_si512(wr[r] + c);
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_dpbusd_epi32(acc[r][t], xv[t], wv);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) out[r][t] = _mm512_reduce_add_epi32(acc[r][t]);
}

template <int R>
void DotRows(const int8_t* const* wr, const uint8_t* xq, int64_t cp, int64_t n, const int64_t* rows,
             const float* sc, const int32_t* sums, const float* xs, float* y, int64_t ldy) {
  for (int64_t t = 0; t < n;) {
    int32_t o[8][4];
    int tt;
    const uint8_t* xt = xq + t * cp;
    if (n - t >= 4) {
      DotTile<R, 4>(wr, xt, cp, o);
      tt = 4;
    } else if (n - t == 3) {
      DotTile<R, 3>(wr, xt, cp, o);
      tt = 3;
    } else if (n - t == 2) {
      DotTile<R, 2>(wr, xt, cp, o);
      tt = 2;
    } else {
      DotTile<R, 1>(wr, xt, cp, o);
      tt = 1;
    }
    for (int r = 0; r < R; ++r) {
      for (int j = 0; j < tt; ++j) {
        const int32_t dot = o[r][j] - 128 * sums[rows[r]];
        y[(t + j) * ldy + rows[r]] = static_cast<float>(dot) * (xs[t + j] * sc[rows[r]]);
      }
    }
    t += tt;
  }
}

void GemmW8A8(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
              int64_t row_begin, int64_t row_end) {
  const auto v = static_cast<QuantVariant>(w.format.variant);
  const int64_t cols = w.cols, cp = QuantPaddedCols(w.format, cols);
  const int64_t n_out = v == QuantVariant::kLlmInt8 ? static_cast<int64_t>(w.aux_bytes[2] / 4) : 0;
  const auto* ids = n_out ? static_cast<const uint32_t*>(w.aux[2]) : nullptr;
  thread_local std::vector<uint8_t> xq;
  thread_local std::vector<float> xs;
  xq.resize(static_cast<size_t>(n * cp));
  xs.resize(static_cast<size_t>(n));
  QuantizeActivations(x, n, cols, cp, ids, n_out, xq.data(), xs.data());
  const auto* q = static_cast<const int8_t*>(w.data);
  const auto* sc = static_cast<const float*>(w.aux[0]);
  const auto* sums = static_cast<const int32_t*>(w.aux[1]);
  for (int64_t t0 = 0; t0 < n; t0 += kTokenBlock) {
    const int64_t nt = std::min(kTokenBlock, n - t0);
    for (int64_t r = row_begin; r < row_end;) {
      const int8_t* wr[4];
      int64_t rows[4];
      if (row_end - r >= 4) {
        for (int i = 0; i < 4; ++i) {
          wr[i] = q + (r + i) * cp;
          rows[i] = r + i;
        }
        DotRows<4>(wr, xq.data() + t0 * cp, cp, nt, rows, sc, sums, xs.data() + t0, y + t0 * ldy, ldy);
        r += 4;
      } else {
        wr[0] = q + r * cp;
        rows[0] = r;
        DotRows<1>(wr, xq.data() + t0 * cp, cp, nt, rows, sc, sums, xs.data() + t0, y + t0 * ldy, ldy);
        r += 1;
      }
    }
    if (n_out > 0) {
      for (int64_t r = row_begin; r < row_end; ++r) {
        AddRowCorrections(w, r, x + t0 * cols, cols, nt, y + t0 * ldy, ldy);
      }
    }
  }
}

}  // namespace

void GemmQuantAvx512(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                     int64_t row_begin, int64_t row_end) {
  if (n <= 0 || row_begin >= row_end) return;
  const auto v = static_cast<QuantVariant>(w.format.variant);
  if (v == QuantVariant::kW8A8 || v == QuantVariant::kLlmInt8) {
    return GemmW8A8(w, x, n, y, ldy, row_begin, row_end);
  }
  // A8 paths (see QuantUsesA8; group 16 stays on the float path) and the A16 path of
  // per-row int8 (QuantUsesA16).
  if (GetCpuFeatures().avx512vnni && w.format.kind == WeightKind::kQuant) {
    if (v == QuantVariant::kInt8Row) return GemmQuant8A16Avx512(w, x, n, y, ldy, row_begin, row_end);
    const bool group_a8 = v == QuantVariant::kGroup && w.format.group_size >= kQuantChunk;
    if (group_a8 && w.format.bits == 4) {
      return GemmQuant4A8Avx512(w, x, n, y, ldy, row_begin, row_end);
    }
    if (group_a8 && (w.format.bits == 8 || w.format.bits == 3 || w.format.bits == 2)) {
      return GemmQuant8A8Avx512(w, x, n, y, ldy, row_begin, row_end);
    }
  }
  GemmFloatPath(w, x, n, y, ldy, row_begin, row_end);
}

}  // namespace compressd::kernels
