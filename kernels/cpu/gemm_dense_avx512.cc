// AVX-512 dense GEMM y[t][r] = sum_c W[r][c] * x[t][c] for F32/F16/BF16 weights, fp32
// activations and fp32 accumulation. BF16 weights on AVX512_BF16 CPUs take the vdpbf16ps
// path at the end of this file (activations rounded to bf16, see gemm.h).
//
// Shape of the work: each output is a dot product along cols, so the micro-kernel holds an
// R-rows x T-tokens tile of 16-lane accumulators, loads each weight vector once and uses it
// for T tokens (T=4 at batch >= 4), and reduces the tile horizontally once per K block.
// - n < 4 (decode): memory bound. 8 rows at a time so that 8 independent FMA chains hide the
//   FMA latency; the rows after the tile are prefetched as one stream (stream_prefetch_inl.h).
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
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/gemm.h"
#include "reduce_avx512_inl.h"
#include "stream_prefetch_inl.h"

namespace compressd::kernels {
namespace {

using avx512::Reduce1;
using avx512::Reduce4;

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

// Columns are summed in blocks of kColBlock: each block is reduced and added to y in order,
// the same sequence whether the caller passes one long row (decode) or column blocks
// (batches), so results do not depend on the batch size.
template <DType D, int R, int T>
void Micro(const Tile& p) {
  const float* xs[T];
  for (int t = 0; t < T; ++t) xs[t] = p.x + t * p.ldx;
  int64_t wrow[R];
  for (int r = 0; r < R; ++r) wrow[r] = r * p.ldw;

  for (int64_t k0 = 0; k0 < p.len; k0 += kColBlock) {
    const int64_t kend = std::min(p.len, k0 + kColBlock);
    __m512 acc[R][T];
    for (int r = 0; r < R; ++r) {
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
    }
    int64_t k = k0;
    for (; k + 16 <= kend; k += 16) {
      __m512 xv[T];
      for (int t = 0; t < T; ++t) xv[t] = _mm512_loadu_ps(xs[t] + k);
      for (int r = 0; r < R; ++r) {
        const __m512 wv = LoadW<D>(p.w, wrow[r] + k);
        for (int t = 0; t < T; ++t) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
      }
    }
    if (k < kend) {
      const __mmask16 m = static_cast<__mmask16>((1u << (kend - k)) - 1u);
      __m512 xv[T];
      for (int t = 0; t < T; ++t) xv[t] = _mm512_maskz_loadu_ps(m, xs[t] + k);
      for (int r = 0; r < R; ++r) {
        const __m512 wv = LoadWMasked<D>(p.w, wrow[r] + k, m);
        for (int t = 0; t < T; ++t) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
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
    // Partial sums per kColBlock columns, added in order, as in the batched path below: a
    // token's outputs do not depend on the batch it ran in (kernels/gemm.h).
    // (Micro splits a row longer than kColBlock into those blocks itself.)
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

// --- BF16 weights x bf16-rounded activations with vdpbf16ps (GemmDenseUsesBf16Dot) ---
//
// One vdpbf16ps multiplies 32 weights (64 bytes, loaded as stored) into 16 fp32 lanes, so
// decode needs one load and one instruction per 64 bytes instead of the two loads, two
// widenings, two shifts and two FMAs of the fp32 path, and batches do twice the MACs per
// instruction. Activations are rounded to bf16 once per call (per thread) into a buffer
// padded with zeros to a multiple of 32 columns.
// Batch invariance: every (row, token) output is one accumulator chain over the columns in
// the same order and one _mm512_reduce_add_ps, whatever the tile (R x T), n or row range.

inline __m512bh AsBh(__m512i v) { return reinterpret_cast<__m512bh>(v); }

// `pf`: decode tiles prefetch the rows after them (stream_prefetch_inl.h).
template <int R, int T, bool PF = false>
void MicroBf16Dot(const uint16_t* w, int64_t ldw, const uint16_t* xb, int64_t ldx, int64_t K,
                  float* y, int64_t ldy, NextTilePrefetch pf = {}) {
  __m512 acc[R][T];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  }
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    __m512i xv[T];
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) xv[t] = _mm512_loadu_si512(xb + t * ldx + k);
    if constexpr (PF) pf.Step<R * 64>();
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512i wv = _mm512_loadu_si512(w + r * ldw + k);
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_dpbf16_ps(acc[r][t], AsBh(wv), AsBh(xv[t]));
    }
  }
  if (k < K) {  // the activation buffer is zero-padded; weights are masked to their row
    const __mmask32 m = static_cast<__mmask32>((uint64_t{1} << (K - k)) - 1u);
    __m512i xv[T];
    for (int t = 0; t < T; ++t) xv[t] = _mm512_loadu_si512(xb + t * ldx + k);
    for (int r = 0; r < R; ++r) {
      const __m512i wv = _mm512_maskz_loadu_epi16(m, w + r * ldw + k);
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_dpbf16_ps(acc[r][t], AsBh(wv), AsBh(xv[t]));
    }
  }
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < R; ++r) y[t * ldy + r] = _mm512_reduce_add_ps(acc[r][t]);
}

template <int R>
void MicroBf16DotT(const uint16_t* w, int64_t ldw, const uint16_t* xb, int64_t ldx, int64_t K,
                   float* y, int64_t ldy, int64_t t_count) {
  switch (t_count) {
    case 1: return MicroBf16Dot<R, 1>(w, ldw, xb, ldx, K, y, ldy);
    case 2: return MicroBf16Dot<R, 2>(w, ldw, xb, ldx, K, y, ldy);
    case 3: return MicroBf16Dot<R, 3>(w, ldw, xb, ldx, K, y, ldy);
    default: return MicroBf16Dot<R, 4>(w, ldw, xb, ldx, K, y, ldy);
  }
}

void GemmBf16Dot(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                 int64_t row_begin, int64_t row_end) {
  const int64_t K = w.cols, Kp = (K + 31) / 32 * 32;
  const auto* wd = static_cast<const uint16_t*>(w.data);
  // Token block: its bf16 activations (tb x Kp x 2 bytes) stay in L2 (<= 256 KiB) while the
  // 4 weight rows of a row group are reused from L1/L2 by every token group.
  const int64_t tb = std::clamp<int64_t>((int64_t{256} << 10) / (Kp * 2), 4, 64);
  thread_local std::vector<uint16_t> xbuf;
  xbuf.resize(static_cast<size_t>(std::min(n, tb) * Kp));
  uint16_t* xb = xbuf.data();
  for (int64_t t0 = 0; t0 < n; t0 += tb) {
    const int64_t nt = std::min(tb, n - t0);
    for (int64_t t = 0; t < nt; ++t) {
      const float* xt = x + (t0 + t) * K;
      uint16_t* d = xb + t * Kp;
      for (int64_t k = 0; k < Kp; k += 16) {
        const int64_t left = K - k;
        const __mmask16 m =
            static_cast<__mmask16>(left >= 16 ? 0xffff : left <= 0 ? 0 : (1u << left) - 1u);
        const __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, xt + k));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + k), reinterpret_cast<__m256i>(h));
      }
    }
    float* yt = y + t0 * ldy;
    int64_t r = row_begin;
    if (nt == 1) {  // decode: 8 independent row streams (short rows: fewer tile overheads)
      for (; r + 8 <= row_end; r += 8) {
        MicroBf16Dot<8, 1, true>(wd + r * K, K, xb, Kp, K, yt + r, ldy,
                                 NextTilePrefetch(wd + (r + 8) * K, wd + row_end * K, 8 * K * 2));
      }
    }
    for (; r < row_end;) {
      const int64_t nr = row_end - r >= 4 ? 4 : row_end - r >= 2 ? 2 : 1;
      for (int64_t t = 0; t < nt; t += 4) {
        const int64_t tc = std::min<int64_t>(4, nt - t);
        const uint16_t* wr = wd + r * K;
        float* yr = yt + t * ldy + r;
        if (nr == 4) {
          MicroBf16DotT<4>(wr, K, xb + t * Kp, Kp, K, yr, ldy, tc);
        } else if (nr == 2) {
          MicroBf16DotT<2>(wr, K, xb + t * Kp, Kp, K, yr, ldy, tc);
        } else {
          MicroBf16DotT<1>(wr, K, xb + t * Kp, Kp, K, yr, ldy, tc);
        }
      }
      r += nr;
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
      if (n > 0 && row_end > row_begin && w.cols > 0 && GetCpuFeatures().avx512bf16) {
        return GemmBf16Dot(w, x, n, y, ldy, row_begin, row_end);
      }
      return GemmDense<DType::kBF16>(w, x, n, y, ldy, row_begin, row_end);
    default:
      return GemmDense<DType::kF32>(w, x, n, y, ldy, row_begin, row_end);
  }
}

}  // namespace compressd::kernels
