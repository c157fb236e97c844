// AVX-512 attention over token-selective KV blocks (MiKV mixed precision, EMS evict-then-merge;
// kernels/kv_quant.h, KvSelectLayout). Same definition as AttendKvSelectRef, which stays the
// oracle (tests/kernels/kv_select_test.cc).
//
// A sealed block of one KV head is read as up to three segments of contiguous rows: its hi rows
// (fp16 or intN, in slot order), its lo rows (intN) and the merge slot (fp16 K/V with a logit
// bias); a staged block (not encoded yet) is one fp16 segment. Softmax is order-free, so the
// segments need not interleave by slot as the reference does. Per block: scores of every row
// for every query head of the KV head (up to 4 at once, each row expanded once for all of
// them), an online-softmax update (running max, sum, rescaled output), then the values; the
// update is per tile of up to 4 blocks, to spread its cost over more rows.
// Dequantization happens in registers, C = chunk() channels at a time (16, or 8 when
// head_dim % 16 != 0, in the low lanes of a zmm): per-channel keys (2/4 bits) are folded into
// the query (q.k = sum_d q_d kmin_d + sum_d (q_d kscale_d) code_d); per-token-group keys and
// values (8-bit keys, every quantized value) are expanded as code * scale + min.
//
// Split invariance: every floating-point operation on a head's data is the same whichever other
// heads share its batch, so out and stage_acc do not depend on how [head_begin, head_end) is cut
// (heads add to stage_acc in increasing order, as in the reference).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/kv_quant.h"
#include "kernels/ops.h"
#include "kernels/types.h"
#include "kv_quant_avx512_inl.h"  // same directory: internal to kernels/cpu/

namespace compressd::kernels {

namespace {

constexpr int kMaxGroup = 4;    // query heads per batch (zmm register budget of the scores)
constexpr int kMaxRows = 65;    // block_size <= 64 rows + the merge slot
constexpr int kTileBlocks = 4;  // blocks per softmax update
constexpr int kTileRows = kTileBlocks * kMaxRows;
constexpr int kMaxUnits = 64;         // head_dim <= 512 in units of >= 8 channels
constexpr int kPad = 16 * kMaxUnits;  // one unit = 16 floats in the buffers below
constexpr int kMaxGroups = 16;        // value groups per row (KvSelectAvx512Supports)
constexpr size_t kHeadHeader = 16;

enum class Fmt : int { kF16 = 16, kQ8 = 8, kQ4 = 4, kQ2 = 2 };

// Unit u (C channels) of a code row of B bits (or fp16 values) as floats in the low C lanes;
// the other lanes are zero.
template <int C, Fmt F>
inline __m512 LoadUnit(const uint8_t* row, int u) {
  if constexpr (F == Fmt::kF16) {
    if constexpr (C == 16) {
      return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 32 * u)));
    } else {
      return _mm512_cvtph_ps(
          _mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 16 * u))));
    }
  } else {
    __m128i x;
    if constexpr (F == Fmt::kQ8) {
      x = C == 16 ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 16 * u))
                  : _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + 8 * u));
    } else if constexpr (F == Fmt::kQ4) {
      const __m128i m = _mm_set1_epi8(0x0f);
      if constexpr (C == 16) {
        const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + 8 * u));
        x = _mm_unpacklo_epi64(_mm_and_si128(b, m), _mm_and_si128(_mm_srli_epi16(b, 4), m));
      } else {
        uint32_t w;
        std::memcpy(&w, row + 4 * u, 4);
        const __m128i b = _mm_cvtsi32_si128(static_cast<int>(w));
        x = _mm_unpacklo_epi32(_mm_and_si128(b, m), _mm_and_si128(_mm_srli_epi16(b, 4), m));
      }
    } else {
      const __m128i m = _mm_set1_epi8(0x03);
      __m128i b;
      if constexpr (C == 16) {
        uint32_t w;
        std::memcpy(&w, row + 4 * u, 4);
        b = _mm_cvtsi32_si128(static_cast<int>(w));
      } else {
        uint16_t w;
        std::memcpy(&w, row + 2 * u, 2);
        b = _mm_cvtsi32_si128(w);
      }
      const __m128i c0 = _mm_and_si128(b, m), c1 = _mm_and_si128(_mm_srli_epi16(b, 2), m);
      const __m128i c2 = _mm_and_si128(_mm_srli_epi16(b, 4), m);
      const __m128i c3 = _mm_and_si128(_mm_srli_epi16(b, 6), m);
      if constexpr (C == 16) {
        x = _mm_unpacklo_epi64(_mm_unpacklo_epi32(c0, c1), _mm_unpacklo_epi32(c2, c3));
      } else {
        x = _mm_unpacklo_epi32(_mm_unpacklo_epi16(c0, c1), _mm_unpacklo_epi16(c2, c3));
      }
    }
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(x));
  }
}

using kv_avx512::Reduce4;  // sums of a, b, c, d in lanes 0..3

// Per-token group parameters (scale, min)[ng] f16 of n rows -> floats par[j][2 * gi (+1)].
void RowParams(const uint8_t* p, size_t stride, int n, int ng, float (*par)[2 * kMaxGroups]) {
  const __mmask16 m0 = static_cast<__mmask16>(ng >= 8 ? 0xffff : (1u << (2 * ng)) - 1);
  const __mmask16 m1 = static_cast<__mmask16>(ng <= 8 ? 0 : (1u << (2 * ng - 16)) - 1);
  for (int j = 0; j < n; ++j, p += stride) {
    _mm512_storeu_ps(par[j], _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m0, p)));
    if (m1 != 0)
      _mm512_storeu_ps(par[j] + 16, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m1, p + 32)));
  }
}

// A run of rows of one format for one KV head: K and V of row j at k + j * stride and
// v + j * stride (fp16 values, or codes, or per-token params then codes, as the format says).
struct Segment {
  Fmt fmt = Fmt::kF16;
  const uint8_t* k = nullptr;
  const uint8_t* v = nullptr;
  size_t kstride = 0, vstride = 0;
  int n = 0;
  int first = 0;                 // index of its first row in the block's score rows
  float bias = 0.0f;             // logit bias (merge slot)
  const uint16_t* kp = nullptr;  // per-channel key scale[hd], min[hd] (2/4-bit keys)
};

struct Shape {
  int hd, nu, ng, upg;  // head_dim, units, value groups, units per group
};

// s[g][first + j] = q_g . k_j (+ bias), q already multiplied by the softmax scale (qb).
template <int C, int G, Fmt F>
void SegmentScores(const Shape& sh, const Segment& sg, const float (*qb)[kPad], float (*qs)[kPad],
                   float (*par)[2 * kMaxGroups], float (*s)[kTileRows]) {
  const int nu = sh.nu;
  const uint8_t* kcodes = sg.k;
  float cst[G];
  for (int g = 0; g < G; ++g) cst[g] = sg.bias;
  const float(*qv_src)[kPad] = qb;
  if constexpr (F == Fmt::kQ4 || F == Fmt::kQ2) {
    // Per-channel keys: fold scale and min into the query.
    const uint8_t* sc = reinterpret_cast<const uint8_t*>(sg.kp);
    const uint8_t* mn = reinterpret_cast<const uint8_t*>(sg.kp + sh.hd);
    for (int g = 0; g < G; ++g) {
      __m512 c = _mm512_setzero_ps();
      for (int u = 0; u < nu; ++u) {
        const __m512 q = _mm512_load_ps(qb[g] + 16 * u);
        _mm512_store_ps(qs[g] + 16 * u, _mm512_mul_ps(q, LoadUnit<C, Fmt::kF16>(sc, u)));
        c = _mm512_fmadd_ps(q, LoadUnit<C, Fmt::kF16>(mn, u), c);
      }
      cst[g] += _mm512_reduce_add_ps(c);
    }
    qv_src = qs;
  } else if constexpr (F == Fmt::kQ8) {
    RowParams(sg.k, sg.kstride, sg.n, sh.ng, par);
    kcodes = sg.k + 4 * sh.ng;
  }
  // Groups of units sharing (scale, min): the whole row unless keys are per-token groups.
  const int n_grp = F == Fmt::kQ8 ? sh.ng : 1, upg = F == Fmt::kQ8 ? sh.upg : nu;
  for (int j = 0; j < sg.n; j += 4) {
    int r[4];
    const uint8_t* rows[4];
    for (int i = 0; i < 4; ++i) {
      r[i] = std::min(j + i, sg.n - 1);
      rows[i] = kcodes + sg.kstride * r[i];
    }
    __m512 acc[G][4];
    for (int g = 0; g < G; ++g) {
      for (int i = 0; i < 4; ++i) acc[g][i] = _mm512_setzero_ps();
    }
    for (int gi = 0, u = 0; gi < n_grp; ++gi) {
      __m512 ks[4], km[4];
      if constexpr (F == Fmt::kQ8) {
        for (int i = 0; i < 4; ++i) {
          ks[i] = _mm512_set1_ps(par[r[i]][2 * gi]);
          km[i] = _mm512_set1_ps(par[r[i]][2 * gi + 1]);
        }
      }
      for (int e = u + upg; u < e; ++u) {
        __m512 qv[G];
        for (int g = 0; g < G; ++g) qv[g] = _mm512_load_ps(qv_src[g] + 16 * u);
        for (int i = 0; i < 4; ++i) {
          __m512 kv = LoadUnit<C, F>(rows[i], u);
          if constexpr (F == Fmt::kQ8) kv = _mm512_fmadd_ps(kv, ks[i], km[i]);
          for (int g = 0; g < G; ++g) acc[g][i] = _mm512_fmadd_ps(kv, qv[g], acc[g][i]);
        }
      }
    }
    for (int g = 0; g < G; ++g) {
      alignas(16) float tmp[4];
      _mm_store_ps(tmp, _mm_add_ps(Reduce4(acc[g][0], acc[g][1], acc[g][2], acc[g][3]),
                                   _mm_set1_ps(cst[g])));
      for (int i = 0; i < 4 && j + i < sg.n; ++i) s[g][sg.first + j + i] = tmp[i];
    }
  }
}

// o[g] += sum_j p[g][first + j] v_j.
template <int C, int G, Fmt F>
void SegmentValues(const Shape& sh, const Segment& sg, float (*par)[2 * kMaxGroups],
                   float (*p)[kTileRows], float (*o)[kPad]) {
  const int nu = sh.nu;
  const float* pw[G];
  for (int g = 0; g < G; ++g) pw[g] = p[g] + sg.first;
  if constexpr (F == Fmt::kF16) {
    for (int u = 0; u < nu; ++u) {
      __m512 acc[G];
      for (int g = 0; g < G; ++g) acc[g] = _mm512_load_ps(o[g] + 16 * u);
      const uint8_t* row = sg.v;
      for (int j = 0; j < sg.n; ++j, row += sg.vstride) {
        const __m512 vv = LoadUnit<C, F>(row, u);
        for (int g = 0; g < G; ++g) acc[g] = _mm512_fmadd_ps(_mm512_set1_ps(pw[g][j]), vv, acc[g]);
      }
      for (int g = 0; g < G; ++g) _mm512_store_ps(o[g] + 16 * u, acc[g]);
    }
  } else {
    RowParams(sg.v, sg.vstride, sg.n, sh.ng, par);
    const uint8_t* codes = sg.v + 4 * sh.ng;
    for (int gi = 0, u = 0; gi < sh.ng; ++gi) {
      for (int e = u + sh.upg; u < e; ++u) {
        __m512 acc[G];
        for (int g = 0; g < G; ++g) acc[g] = _mm512_load_ps(o[g] + 16 * u);
        const uint8_t* row = codes;
        for (int j = 0; j < sg.n; ++j, row += sg.vstride) {
          const __m512 vv = _mm512_fmadd_ps(LoadUnit<C, F>(row, u), _mm512_set1_ps(par[j][2 * gi]),
                                            _mm512_set1_ps(par[j][2 * gi + 1]));
          for (int g = 0; g < G; ++g) {
            acc[g] = _mm512_fmadd_ps(_mm512_set1_ps(pw[g][j]), vv, acc[g]);
          }
        }
        for (int g = 0; g < G; ++g) _mm512_store_ps(o[g] + 16 * u, acc[g]);
      }
    }
  }
}

template <int C, int G>
void Scores(const Shape& sh, const Segment& sg, const float (*qb)[kPad], float (*qs)[kPad],
            float (*par)[2 * kMaxGroups], float (*s)[kTileRows]) {
  switch (sg.fmt) {
    case Fmt::kF16:
      return SegmentScores<C, G, Fmt::kF16>(sh, sg, qb, qs, par, s);
    case Fmt::kQ8:
      return SegmentScores<C, G, Fmt::kQ8>(sh, sg, qb, qs, par, s);
    case Fmt::kQ4:
      return SegmentScores<C, G, Fmt::kQ4>(sh, sg, qb, qs, par, s);
    case Fmt::kQ2:
      return SegmentScores<C, G, Fmt::kQ2>(sh, sg, qb, qs, par, s);
  }
}

template <int C, int G>
void Values(const Shape& sh, const Segment& sg, float (*par)[2 * kMaxGroups], float (*p)[kTileRows],
            float (*o)[kPad]) {
  switch (sg.fmt) {
    case Fmt::kF16:
      return SegmentValues<C, G, Fmt::kF16>(sh, sg, par, p, o);
    case Fmt::kQ8:
      return SegmentValues<C, G, Fmt::kQ8>(sh, sg, par, p, o);
    case Fmt::kQ4:
      return SegmentValues<C, G, Fmt::kQ4>(sh, sg, par, p, o);
    case Fmt::kQ2:
      return SegmentValues<C, G, Fmt::kQ2>(sh, sg, par, p, o);
  }
}

// Rows of `bits` from `row0`: where K and V start and the per-channel key params.
Segment Rows(const KvSelectLayout& l, int bits, const uint8_t* row0, int n, int first,
             const uint16_t* kp) {
  Segment sg;
  sg.fmt = static_cast<Fmt>(bits);
  sg.k = row0;
  sg.kstride = sg.vstride = l.RowBytes(bits);
  const size_t hd = l.head_dim;
  sg.v = row0 + (bits == 16 ? 2 * hd : bits == 8 ? 4u * l.n_groups() + hd : hd * bits / 8);
  sg.n = n;
  sg.first = first;
  sg.kp = kp;
  return sg;
}

// The segments of block b for KV head kvh (at most 3), their rows numbered from *n_rows on;
// returns how many and advances *n_rows.
int BlockSegments(const KvSelectLayout& l, const uint8_t* blk, const uint16_t* stage, int kvh,
                  int ntok, Segment* seg, int* n_rows) {
  const int hd = l.head_dim, bs = l.block_size;
  if (stage != nullptr) {
    const size_t half = static_cast<size_t>(l.n_kv_heads) * bs * hd;
    Segment& sg = seg[0];
    sg = Segment();
    sg.k = reinterpret_cast<const uint8_t*>(stage + static_cast<size_t>(kvh) * bs * hd);
    sg.v = reinterpret_cast<const uint8_t*>(stage + half + static_cast<size_t>(kvh) * bs * hd);
    sg.kstride = sg.vstride = 2u * hd;
    sg.n = ntok;
    sg.first = *n_rows;
    *n_rows += ntok;
    return 1;
  }
  const uint8_t* head = blk + kKvQuantHeader + l.HeadFixedBytes() * kvh;
  uint64_t mask;
  uint32_t n_merged;
  std::memcpy(&mask, head, 8);
  std::memcpy(&n_merged, head + 12, 4);
  const uint8_t* p = head + kHeadHeader;
  const uint16_t *hi_kp = nullptr, *lo_kp = nullptr, *merge = nullptr;
  if (l.hi_bits == 2 || l.hi_bits == 4) {
    hi_kp = reinterpret_cast<const uint16_t*>(p);
    p += 4u * hd;
  }
  if (l.lo_bits == 2 || l.lo_bits == 4) {
    lo_kp = reinterpret_cast<const uint16_t*>(p);
    p += 4u * hd;
  }
  if (l.lo_bits == 0 && l.merge) merge = reinterpret_cast<const uint16_t*>(p);
  // Row pool offsets (kv_quant_select.cc, RowStarts): heads' hi rows in order, then lo rows.
  size_t hi_before = 0;
  for (int j = 0; j < kvh; ++j) {
    uint32_t n;
    std::memcpy(&n, blk + kKvQuantHeader + l.HeadFixedBytes() * j + 8, 4);
    hi_before += n;
  }
  const uint8_t* pool = blk + kKvQuantHeader + l.HeadFixedBytes() * l.n_kv_heads;
  const uint64_t live = ntok >= 64 ? ~uint64_t{0} : (uint64_t{1} << ntok) - 1;
  const int n_hi = __builtin_popcountll(mask & live);  // hi rows are in slot order
  int ns = 0, rows = *n_rows;
  if (n_hi > 0) {
    seg[ns++] = Rows(l, l.hi_bits, pool + hi_before * l.RowBytes(l.hi_bits), n_hi, rows, hi_kp);
    rows += n_hi;
  }
  if (l.lo_bits > 0 && ntok - n_hi > 0) {
    const size_t lo_before = static_cast<size_t>(kvh) * bs - hi_before;
    const uint8_t* lo0 = pool + static_cast<size_t>(l.n_hi) * l.RowBytes(l.hi_bits) +
                         lo_before * l.RowBytes(l.lo_bits);
    seg[ns++] = Rows(l, l.lo_bits, lo0, ntok - n_hi, rows, lo_kp);
    rows += ntok - n_hi;
  }
  if (merge != nullptr && n_merged > 0 && ntok == bs) {
    Segment& sg = seg[ns++];
    sg = Segment();
    sg.k = reinterpret_cast<const uint8_t*>(merge);
    sg.v = reinterpret_cast<const uint8_t*>(merge + hd);
    sg.n = 1;
    sg.first = rows;
    sg.bias = F16ToF32(merge[2 * hd]);
    rows += 1;
  }
  *n_rows = rows;
  return ns;
}

template <int C, int G>
void AttendGroup(const KvSelectLayout& l, const float* q, int h0, int kvh,
                 const uint8_t* const* blocks, const uint16_t* const* stages,
                 float* const* stage_acc, int n_ctx, float scale, float* out) {
  const int hd = l.head_dim, bs = l.block_size;
  const Shape sh{hd, hd / C, l.n_groups(), l.v_group / C};
  const int nb = (n_ctx + bs - 1) / bs;
  alignas(64) float qb[G][kPad];
  alignas(64) float qs[G][kPad];
  alignas(64) float o[G][kPad];
  alignas(64) float s[G][kTileRows];
  alignas(64) float par[kMaxRows][2 * kMaxGroups];
  float m[G], sum[G];
  const __mmask16 lanes = static_cast<__mmask16>((1u << C) - 1);
  for (int g = 0; g < G; ++g) {
    const float* qg = q + static_cast<size_t>(h0 + g) * hd;
    for (int u = 0; u < sh.nu; ++u) {
      _mm512_store_ps(qb[g] + 16 * u, _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes, qg + C * u),
                                                    _mm512_set1_ps(scale)));
      _mm512_store_ps(o[g] + 16 * u, _mm512_setzero_ps());
    }
    m[g] = -INFINITY;
    sum[g] = 0.0f;
  }
  Segment seg[3 * kTileBlocks];
  for (int b0 = 0; b0 < nb; b0 += kTileBlocks) {
    int ns = 0, n_rows = 0;
    for (int b = b0; b < std::min(nb, b0 + kTileBlocks); ++b) {
      const int ntok = std::min(bs, n_ctx - b * bs);
      const uint16_t* stage = stages != nullptr ? stages[b] : nullptr;
      ns += BlockSegments(l, blocks[b], stage, kvh, ntok, seg + ns, &n_rows);
    }
    if (n_rows == 0) continue;
    for (int i = 0; i < ns; ++i) Scores<C, G>(sh, seg[i], qb, qs, par, s);
    for (int g = 0; g < G; ++g) {
      float mx = m[g];
      for (int j = 0; j < n_rows; ++j) mx = std::max(mx, s[g][j]);
      const float corr = std::exp(m[g] - mx);
      for (int j = 0; j < n_rows; ++j) s[g][j] -= mx;
      ExpAvx512(s[g], s[g], n_rows);
      float block_sum = 0.0f;
      for (int j = 0; j < n_rows; ++j) block_sum += s[g][j];
      sum[g] = sum[g] * corr + block_sum;
      m[g] = mx;
      if (corr != 1.0f) {
        const __m512 c = _mm512_set1_ps(corr);
        for (int u = 0; u < sh.nu; ++u) {
          _mm512_store_ps(o[g] + 16 * u, _mm512_mul_ps(_mm512_load_ps(o[g] + 16 * u), c));
        }
      }
    }
    for (int i = 0; i < ns; ++i) Values<C, G>(sh, seg[i], par, s, o);
  }
  float inv[G];
  for (int g = 0; g < G; ++g) {
    inv[g] = sum[g] > 0.0f ? 1.0f / sum[g] : 0.0f;
    float* oh = out + static_cast<size_t>(h0 + g) * hd;
    for (int u = 0; u < sh.nu; ++u) {
      _mm512_mask_storeu_ps(oh + C * u, lanes,
                            _mm512_mul_ps(_mm512_load_ps(o[g] + 16 * u), _mm512_set1_ps(inv[g])));
    }
  }
  if (stages == nullptr || stage_acc == nullptr) return;
  // Final probabilities of the staged tokens (the codec's importance sums). The scores are
  // recomputed exactly as above, so p <= 1; heads add in increasing order.
  for (int b = 0; b < nb; ++b) {
    if (stages[b] == nullptr || stage_acc[b] == nullptr) continue;
    const int ntok = std::min(bs, n_ctx - b * bs);
    int n_rows = 0;
    BlockSegments(l, blocks[b], stages[b], kvh, ntok, seg, &n_rows);
    Scores<C, G>(sh, seg[0], qb, qs, par, s);
    float* acc = stage_acc[b] + static_cast<size_t>(kvh) * bs;
    for (int g = 0; g < G; ++g) {
      for (int j = 0; j < ntok; ++j) s[g][j] -= m[g];
      ExpAvx512(s[g], s[g], ntok);
      for (int j = 0; j < ntok; ++j) acc[j] += s[g][j] * inv[g];
    }
  }
}

template <int C>
void AttendN(int g, const KvSelectLayout& l, const float* q, int h0, int kvh,
             const uint8_t* const* blocks, const uint16_t* const* stages, float* const* stage_acc,
             int n_ctx, float scale, float* out) {
  switch (g) {
    case 1:
      return AttendGroup<C, 1>(l, q, h0, kvh, blocks, stages, stage_acc, n_ctx, scale, out);
    case 2:
      return AttendGroup<C, 2>(l, q, h0, kvh, blocks, stages, stage_acc, n_ctx, scale, out);
    case 3:
      return AttendGroup<C, 3>(l, q, h0, kvh, blocks, stages, stage_acc, n_ctx, scale, out);
    default:
      return AttendGroup<C, 4>(l, q, h0, kvh, blocks, stages, stage_acc, n_ctx, scale, out);
  }
}

}  // namespace

void AttendKvSelectAvx512(const KvSelectLayout& l, int n_heads, const float* q,
                          const uint8_t* const* blocks, const uint16_t* const* stages,
                          float* const* stage_acc, int n_ctx, float scale, float* out,
                          float* scratch, int head_begin, int head_end) {
  if (!KvSelectAvx512Supports(l) || n_ctx <= 0) {
    return AttendKvSelectRef(l, n_heads, q, blocks, stages, stage_acc, n_ctx, scale, out, scratch,
                             head_begin, head_end);
  }
  const int group = n_heads / l.n_kv_heads;
  for (int h = head_begin; h < head_end;) {
    const int kvh = h / group;
    const int g = std::min({kMaxGroup, head_end - h, (kvh + 1) * group - h});
    if (l.chunk() == 16) {
      AttendN<16>(g, l, q, h, kvh, blocks, stages, stage_acc, n_ctx, scale, out);
    } else {
      AttendN<8>(g, l, q, h, kvh, blocks, stages, stage_acc, n_ctx, scale, out);
    }
    h += g;
  }
}

}  // namespace compressd::kernels
