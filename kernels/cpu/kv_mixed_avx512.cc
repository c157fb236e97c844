// AVX-512 attention over a KIVI block table that mixes base blocks and demoted blocks (the KV
// pressure ladder's recompression; entry point declared in kernels/kv_quant.h, demoted layout
// documented in engine/kv/quant_demote.h), plus the unsealed last block from its fp16 staging.
//
// Same scheme as kv_quant_avx512.cc: dequantization folded into the math, codes expanded in
// registers, online softmax per block, heads sharing a KV head processed together. A demoted
// block is a 2 * block_size token block with per-channel K parameters (as a base block) and
// one value (scale, min) pair per tg tokens x vg channels, so both kinds go through the same
// loops with their own row widths and parameter strides. Each head's arithmetic does not
// depend on how many heads are processed together, so the output does not depend on the head
// range split. The scalar reference is QuantKvCodec::AttendMixed's decode-then-softmax path.
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

using namespace kv_avx512;  // NOLINT(build/namespaces): the base kernel's building blocks

constexpr int kMaxRows = kMaxBlock;  // tokens of one block (a demoted one holds 2 * block_size)
constexpr int kMaxParamGroups = 16;

template <int G>
void ScoresBits(int bits, const float (*qs)[kMaxHeadDim], const float* cst, const uint8_t* r0,
                size_t row_bytes, int len, int n_chunks, float (*s)[kMaxRows]) {
  switch (bits) {
    case 2:
      return Scores<Row::kQ2, G>(qs, cst, r0, row_bytes, len, n_chunks, s);
    case 4:
      return Scores<Row::kQ4, G>(qs, cst, r0, row_bytes, len, n_chunks, s);
    case 8:
      return Scores<Row::kQ8, G>(qs, cst, r0, row_bytes, len, n_chunks, s);
    default:
      return Scores<Row::kF16, G>(qs, cst, r0, row_bytes, len, n_chunks, s);
  }
}

template <int G>
void AccumulateBits(int bits, const uint8_t* r0, size_t row_bytes, int len, int n_chunks,
                    int chunks_per_group, int ng, const float* vsf, float (*p)[kMaxRows],
                    float (*o)[kMaxHeadDim]) {
  switch (bits) {
    case 2:
      return AccumulateV<Row::kQ2, G>(r0, row_bytes, len, n_chunks, chunks_per_group, ng, vsf, p,
                                      o);
    case 4:
      return AccumulateV<Row::kQ4, G>(r0, row_bytes, len, n_chunks, chunks_per_group, ng, vsf, p,
                                      o);
    case 8:
      return AccumulateV<Row::kQ8, G>(r0, row_bytes, len, n_chunks, chunks_per_group, ng, vsf, p,
                                      o);
    default:
      return AccumulateV<Row::kF16, G>(r0, row_bytes, len, n_chunks, chunks_per_group, ng, vsf, p,
                                       o);
  }
}

// Bytes of one KV head of a demoted region (DemotedLayout::HeadBytes).
size_t DemotedHeadBytes(const KvQuantLayout& d, int tg) {
  const size_t hd = d.head_dim, T = d.block_size;
  return 4 * hd + d.KRowBytes() * T + (T / tg) * (hd / d.v_group) * 4 + d.VRowBytes() * T;
}

template <int G>
void AttendGroup(const KvQuantLayout& bl, const KvQuantLayout& dl, int tg, const float* q, int h0,
                 int kvh, const uint8_t* const* blocks, const uint8_t* is_demoted,
                 const uint16_t* tail_stage, int n_ctx, float scale, float* out) {
  const int hd = bl.head_dim, bs = bl.block_size, nc = hd / 16;
  const size_t dem_head = DemotedHeadBytes(dl, tg);
  alignas(64) float qs[G][kMaxHeadDim];
  alignas(64) float o[G][kMaxHeadDim] = {};
  alignas(64) float s[G][kMaxRows];
  float vsf[kMaxRows * kMaxParamGroups], vmn[kMaxRows * kMaxParamGroups];
  float cst[G], m[G], sum[G];
  for (int g = 0; g < G; ++g) m[g] = -INFINITY, sum[g] = 0.0f;
  const size_t stage_half = static_cast<size_t>(bl.n_kv_heads) * bs * hd;

  for (int i = 0, t = 0; t < n_ctx; ++i) {
    const bool dem = is_demoted[i] != 0;
    const int cap = dem ? dl.block_size : bs;
    const int len = std::min(cap, n_ctx - t);
    const bool staged = !dem && tail_stage != nullptr && t + cap >= n_ctx;
    t += len;
    const uint8_t *krows, *vrows;
    size_t krb, vrb;
    int kbits, vbits, vg = bl.v_group, ng = 1;
    if (staged) {
      krows = reinterpret_cast<const uint8_t*>(tail_stage + static_cast<size_t>(kvh) * bs * hd);
      vrows = reinterpret_cast<const uint8_t*>(tail_stage + stage_half +
                                               static_cast<size_t>(kvh) * bs * hd);
      krb = vrb = 2u * hd;
      kbits = vbits = 16;
      for (int g = 0; g < G; ++g) {
        const float* qg = q + static_cast<size_t>(h0 + g) * hd;
        for (int d = 0; d < hd; ++d) qs[g][d] = qg[d] * scale;
        cst[g] = 0.0f;
      }
    } else {
      const uint8_t* kh = blocks[i] + kKvQuantHeader + (dem ? dem_head : bl.HeadBytes()) * kvh;
      const uint16_t* kscale = reinterpret_cast<const uint16_t*>(kh);
      const uint16_t* kmin = kscale + hd;
      krows = kh + 4 * hd;
      const uint16_t* vparam;
      int ptg = 1;  // tokens per value parameter pair
      if (dem) {
        krb = dl.KRowBytes();
        kbits = dl.k_bits;
        vbits = dl.v_bits;
        vg = dl.v_group;
        ng = hd / vg;
        ptg = tg;
        vparam = reinterpret_cast<const uint16_t*>(krows + krb * dl.block_size);
        vrows = reinterpret_cast<const uint8_t*>(vparam) +
                static_cast<size_t>(dl.block_size / tg) * ng * 4;
        vrb = dl.VRowBytes();
      } else {
        krb = bl.KRowBytes();
        kbits = bl.k_bits;
        vbits = bl.v_bits;
        ng = hd / vg;
        const uint8_t* vh = kh + bl.KHeadBytes();
        vparam = reinterpret_cast<const uint16_t*>(vh);
        vrows = vh + static_cast<size_t>(bs) * ng * 4;
        vrb = bl.VRowBytes();
      }
      for (int g = 0; g < G; ++g) {
        const float* qg = q + static_cast<size_t>(h0 + g) * hd;
        __m512 c = _mm512_setzero_ps();
        for (int k = 0; k < nc; ++k) {
          const __m512 qv = _mm512_mul_ps(_mm512_loadu_ps(qg + 16 * k), _mm512_set1_ps(scale));
          const __m512 sc = _mm512_cvtph_ps(
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kscale + 16 * k)));
          const __m512 mn =
              _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(kmin + 16 * k)));
          _mm512_store_ps(qs[g] + 16 * k, _mm512_mul_ps(qv, sc));
          c = _mm512_fmadd_ps(qv, mn, c);
        }
        cst[g] = _mm512_reduce_add_ps(c);
      }
      for (int j = 0; j < len; ++j) {
        const uint16_t* p = vparam + static_cast<size_t>(j / ptg) * ng * 2;
        for (int gi = 0; gi < ng; ++gi) {
          vsf[j * ng + gi] = F16ToF32(p[2 * gi]);
          vmn[j * ng + gi] = F16ToF32(p[2 * gi + 1]);
        }
      }
    }
    ScoresBits<G>(kbits, qs, cst, krows, krb, len, nc, s);
    for (int g = 0; g < G; ++g) {
      float mx = m[g];
      for (int j = 0; j < len; ++j) mx = std::max(mx, s[g][j]);
      const float corr = std::exp(m[g] - mx);
      for (int j = 0; j < len; ++j) s[g][j] -= mx;
      ExpAvx512(s[g], s[g], len);
      float block_sum = 0.0f;
      for (int j = 0; j < len; ++j) block_sum += s[g][j];
      sum[g] = sum[g] * corr + block_sum;
      m[g] = mx;
      if (corr != 1.0f) {
        for (int d = 0; d < hd; ++d) o[g][d] *= corr;
      }
    }
    if (staged) {
      AccumulateBits<G>(16, vrows, vrb, len, nc, 1, 1, nullptr, s, o);
    } else {
      // Per-group offsets: sum_j p_j vmin_jg, added to every channel of the group.
      for (int g = 0; g < G; ++g) {
        for (int gi = 0; gi < ng; ++gi) {
          float off = 0.0f;
          for (int j = 0; j < len; ++j) off += s[g][j] * vmn[j * ng + gi];
          for (int d = gi * vg; d < (gi + 1) * vg; ++d) o[g][d] += off;
        }
      }
      AccumulateBits<G>(vbits, vrows, vrb, len, nc, vg / 16, ng, vsf, s, o);
    }
  }
  for (int g = 0; g < G; ++g) {
    float* oh = out + static_cast<size_t>(h0 + g) * hd;
    const float inv = 1.0f / sum[g];
    for (int d = 0; d < hd; ++d) oh[d] = o[g][d] * inv;
  }
}

}  // namespace

void AttendKvMixedAvx512(const KvQuantLayout& base, const KvQuantLayout& dem, int dem_tg,
                         int n_heads, const float* q, const uint8_t* const* blocks,
                         const uint8_t* is_demoted, const uint16_t* tail_stage, int n_ctx,
                         float scale, float* out, int head_begin, int head_end) {
  const int group = n_heads / base.n_kv_heads;
  for (int h = head_begin; h < head_end;) {
    const int kvh = h / group;
    const int g = std::min({kMaxGroup, head_end - h, (kvh + 1) * group - h});
    switch (g) {
      case 1:
        AttendGroup<1>(base, dem, dem_tg, q, h, kvh, blocks, is_demoted, tail_stage, n_ctx, scale,
                       out);
        break;
      case 2:
        AttendGroup<2>(base, dem, dem_tg, q, h, kvh, blocks, is_demoted, tail_stage, n_ctx, scale,
                       out);
        break;
      case 3:
        AttendGroup<3>(base, dem, dem_tg, q, h, kvh, blocks, is_demoted, tail_stage, n_ctx, scale,
                       out);
        break;
      default:
        AttendGroup<4>(base, dem, dem_tg, q, h, kvh, blocks, is_demoted, tail_stage, n_ctx, scale,
                       out);
        break;
    }
    h += g;
  }
}

}  // namespace compressd::kernels
