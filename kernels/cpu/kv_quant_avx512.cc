// AVX-512 attention over KIVI-style quantized KV blocks (kernels/kv_quant.h).
//
// Decode attention is bound by reading the cache, so heads sharing a KV head (GQA, up to 4) are
// processed together and each code row is expanded once for all of them. Dequantization is
// folded into the math instead of materialising K/V:
//   q . k_t = sum_d q_d kmin_d + sum_d (q_d kscale_d) code_td      (per-channel keys)
//   sum_t p_t v_t[d] = sum_t p_t vmin_tg + sum_t (p_t vscale_tg) code_td   (per-token values)
// so a token costs one code expansion (16 codes -> 16 floats, no shuffles thanks to the
// packing) and one FMA per head per 16 channels. Softmax is online per block (running max,
// sum and rescaled output), as in attention_avx512.cc. The unsealed last block (fp16 staging)
// goes through the same loops with an fp16 row loader.
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

using namespace kv_avx512;  // NOLINT(build/namespaces): this file's building blocks

// GEAR extras (kv_quant.h) of one of K/V: rank-r error factors and sparse corrections.
struct Extras {
  const uint16_t* a;  // [block_size][rank]
  const uint16_t* b;  // [head_dim][rank]
  const uint8_t* outl;
};

inline Extras GetExtras(const KvQuantLayout& l, const uint8_t* p) {
  const uint16_t* a = reinterpret_cast<const uint16_t*>(p);
  return {a, a + static_cast<size_t>(l.block_size) * l.rank,
          p + 2u * l.rank * (l.block_size + l.head_dim)};
}

// s[g][j] += scale * q_g . (error of K_j) for j < len.
template <int G>
void ExtraScores(const KvQuantLayout& l, const Extras& e, const float* q, int h0, float scale,
                 int len, float (*s)[kMaxBlock]) {
  const int hd = l.head_dim, r = l.rank;
  for (int g = 0; g < G; ++g) {
    const float* qg = q + static_cast<size_t>(h0 + g) * hd;
    float u[8];
    for (int k = 0; k < r; ++k) {
      float acc = 0.0f;
      for (int d = 0; d < hd; ++d) acc += qg[d] * F16ToF32(e.b[d * r + k]);
      u[k] = acc * scale;
    }
    if (r > 0) {
      for (int j = 0; j < len; ++j) {
        float acc = 0.0f;
        for (int k = 0; k < r; ++k) acc += F16ToF32(e.a[j * r + k]) * u[k];
        s[g][j] += acc;
      }
    }
    for (int i = 0; i < l.outliers; ++i) {
      uint16_t ix, v;
      std::memcpy(&ix, e.outl + 4 * i, 2);
      std::memcpy(&v, e.outl + 4 * i + 2, 2);
      const int t = ix / hd;
      if (t < len) s[g][t] += scale * qg[ix % hd] * F16ToF32(v);
    }
  }
}

// o[g] += sum_j p[g][j] * (error of V_j) for j < len.
template <int G>
void ExtraValues(const KvQuantLayout& l, const Extras& e, int len, float (*p)[kMaxBlock],
                 float (*o)[kMaxHeadDim]) {
  const int hd = l.head_dim, r = l.rank;
  for (int g = 0; g < G; ++g) {
    for (int k = 0; k < r; ++k) {
      float w = 0.0f;
      for (int j = 0; j < len; ++j) w += p[g][j] * F16ToF32(e.a[j * r + k]);
      for (int d = 0; d < hd; ++d) o[g][d] += w * F16ToF32(e.b[d * r + k]);
    }
    for (int i = 0; i < l.outliers; ++i) {
      uint16_t ix, v;
      std::memcpy(&ix, e.outl + 4 * i, 2);
      std::memcpy(&v, e.outl + 4 * i + 2, 2);
      const int t = ix / hd;
      if (t < len) o[g][ix % hd] += p[g][t] * F16ToF32(v);
    }
  }
}

template <Row KR, Row VR, int G>
void AttendGroup(const KvQuantLayout& l, const float* q, int h0, int kvh,
                 const uint8_t* const* blocks, const uint16_t* tail_stage, int n_ctx, float scale,
                 float* out) {
  const int hd = l.head_dim, bs = l.block_size, nc = hd / 16, ng = l.n_groups();
  const int cpg = l.v_group / 16;
  const int last = (n_ctx - 1) / bs;
  alignas(64) float qs[G][kMaxHeadDim];
  alignas(64) float o[G][kMaxHeadDim] = {};
  alignas(64) float s[G][kMaxBlock];
  float vsf[kMaxBlock * 16];
  float cst[G], m[G], sum[G];
  for (int g = 0; g < G; ++g) m[g] = -INFINITY, sum[g] = 0.0f;
  const size_t stage_half = static_cast<size_t>(l.n_kv_heads) * bs * hd;
  const bool has_extras = l.rank > 0 || l.outliers > 0;

  for (int b = 0; b <= last; ++b) {
    const int len = std::min(bs, n_ctx - b * bs);
    const bool staged = b == last && tail_stage != nullptr;
    const uint8_t *krows, *vrows;
    size_t krb, vrb;
    if (staged) {
      krows = reinterpret_cast<const uint8_t*>(tail_stage + static_cast<size_t>(kvh) * bs * hd);
      vrows = reinterpret_cast<const uint8_t*>(tail_stage + stage_half + static_cast<size_t>(kvh) * bs * hd);
      krb = vrb = 2u * hd;
      for (int g = 0; g < G; ++g) {
        const float* qg = q + static_cast<size_t>(h0 + g) * hd;
        for (int d = 0; d < hd; ++d) qs[g][d] = qg[d] * scale;
        cst[g] = 0.0f;
      }
      Scores<Row::kF16, G>(qs, cst, krows, krb, len, nc, s);
    } else {
      const uint8_t* kh = blocks[b] + kKvQuantHeader + l.HeadBytes() * kvh;
      const uint16_t* kscale = reinterpret_cast<const uint16_t*>(kh);
      const uint16_t* kmin = kscale + hd;
      krows = kh + 4 * hd;
      krb = l.KRowBytes();
      for (int g = 0; g < G; ++g) {
        const float* qg = q + static_cast<size_t>(h0 + g) * hd;
        __m512 c = _mm512_setzero_ps();
        for (int k = 0; k < nc; ++k) {
          const __m512 qv = _mm512_mul_ps(_mm512_loadu_ps(qg + 16 * k), _mm512_set1_ps(scale));
          const __m512 sc = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(kscale + 16 * k)));
          const __m512 mn = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(kmin + 16 * k)));
          _mm512_store_ps(qs[g] + 16 * k, _mm512_mul_ps(qv, sc));
          c = _mm512_fmadd_ps(qv, mn, c);
        }
        cst[g] = _mm512_reduce_add_ps(c);
      }
      Scores<KR, G>(qs, cst, krows, krb, len, nc, s);
      if (has_extras) {
        ExtraScores<G>(l, GetExtras(l, kh + l.KHeadBytes() + l.VHeadBytes()), q, h0, scale, len, s);
      }
      const uint8_t* vh = kh + l.KHeadBytes();
      const uint16_t* vparam = reinterpret_cast<const uint16_t*>(vh);
      vrows = vh + static_cast<size_t>(bs) * ng * 4;
      vrb = l.VRowBytes();
      for (int j = 0; j < len * ng; ++j) vsf[j] = F16ToF32(vparam[2 * j]);
    }
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
      AccumulateV<Row::kF16, G>(vrows, vrb, len, nc, cpg, ng, nullptr, s, o);
    } else {
      // Per-group offsets: sum_j p_j vmin_jg, added to every channel of the group.
      const uint16_t* vparam = reinterpret_cast<const uint16_t*>(vrows - static_cast<size_t>(bs) * ng * 4);
      for (int g = 0; g < G; ++g) {
        for (int gi = 0; gi < ng; ++gi) {
          float off = 0.0f;
          for (int j = 0; j < len; ++j) off += s[g][j] * F16ToF32(vparam[2 * (j * ng + gi) + 1]);
          for (int d = gi * l.v_group; d < (gi + 1) * l.v_group; ++d) o[g][d] += off;
        }
      }
      AccumulateV<VR, G>(vrows, vrb, len, nc, cpg, ng, vsf, s, o);
      if (has_extras) {
        const uint8_t* kh = blocks[b] + kKvQuantHeader + l.HeadBytes() * kvh;
        ExtraValues<G>(l, GetExtras(l, kh + l.KHeadBytes() + l.VHeadBytes() + l.ExtraBytes()), len,
                       s, o);
      }
    }
  }
  for (int g = 0; g < G; ++g) {
    float* oh = out + static_cast<size_t>(h0 + g) * hd;
    const float inv = 1.0f / sum[g];
    for (int d = 0; d < hd; ++d) oh[d] = o[g][d] * inv;
  }
}

template <Row KR, Row VR>
void AttendN(int g, const KvQuantLayout& l, const float* q, int h0, int kvh,
             const uint8_t* const* blocks, const uint16_t* st, int n_ctx, float scale, float* out) {
  switch (g) {
    case 1: return AttendGroup<KR, VR, 1>(l, q, h0, kvh, blocks, st, n_ctx, scale, out);
    case 2: return AttendGroup<KR, VR, 2>(l, q, h0, kvh, blocks, st, n_ctx, scale, out);
    case 3: return AttendGroup<KR, VR, 3>(l, q, h0, kvh, blocks, st, n_ctx, scale, out);
    default: return AttendGroup<KR, VR, 4>(l, q, h0, kvh, blocks, st, n_ctx, scale, out);
  }
}

template <Row KR>
void AttendK(int g, const KvQuantLayout& l, const float* q, int h0, int kvh,
             const uint8_t* const* blocks, const uint16_t* st, int n_ctx, float scale, float* out) {
  switch (l.v_bits) {
    case 2: return AttendN<KR, Row::kQ2>(g, l, q, h0, kvh, blocks, st, n_ctx, scale, out);
    case 4: return AttendN<KR, Row::kQ4>(g, l, q, h0, kvh, blocks, st, n_ctx, scale, out);
    default: return AttendN<KR, Row::kQ8>(g, l, q, h0, kvh, blocks, st, n_ctx, scale, out);
  }
}

}  // namespace

void AttendKvQuantAvx512(const KvQuantLayout& l, int n_heads, const float* q,
                         const uint8_t* const* blocks, const uint16_t* tail_stage, int n_ctx,
                         float scale, float* out, float* scratch, int head_begin, int head_end) {
  if (l.head_dim % 16 != 0 || l.head_dim > kMaxHeadDim || l.block_size > kMaxBlock ||
      l.n_groups() > 16 || n_ctx <= 0) {
    return AttendKvQuantRef(l, n_heads, q, blocks, tail_stage, n_ctx, scale, out, scratch,
                            head_begin, head_end);
  }
  const int group = n_heads / l.n_kv_heads;
  for (int h = head_begin; h < head_end;) {
    const int kvh = h / group;
    const int g = std::min({kMaxGroup, head_end - h, (kvh + 1) * group - h});
    switch (l.k_bits) {
      case 2: AttendK<Row::kQ2>(g, l, q, h, kvh, blocks, tail_stage, n_ctx, scale, out); break;
      case 4: AttendK<Row::kQ4>(g, l, q, h, kvh, blocks, tail_stage, n_ctx, scale, out); break;
      default: AttendK<Row::kQ8>(g, l, q, h, kvh, blocks, tail_stage, n_ctx, scale, out); break;
    }
    h += g;
  }
}

}  // namespace compressd::kernels
