// Scalar reference of the KIVI-style quantized KV block (kernels/kv_quant.h): packing, block
// encoding, token decoding, the attention oracle and the run-time ISA dispatch.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/kv_quant.h"
#include "kernels/ops.h"
#include "kernels/types.h"

namespace compressd::kernels {

bool KvQuantLayout::Valid() const {
  auto ok_bits = [](int b) { return b == 2 || b == 4 || b == 8; };
  return ok_bits(k_bits) && ok_bits(v_bits) && block_size > 0 && n_kv_heads > 0 &&
         head_dim > 0 && head_dim % 8 == 0 && v_group > 0 && head_dim % v_group == 0 &&
         v_group % chunk() == 0 && rank >= 0 && rank <= 8 && outliers >= 0 &&
         outliers <= block_size * head_dim &&
         (outliers == 0 || static_cast<int64_t>(block_size) * head_dim <= 65536);
}

void PackKvCodes(const uint8_t* codes, int n, int bits, int chunk, uint8_t* dst) {
  const int cb = chunk * bits / 8;  // bytes per chunk
  for (int c0 = 0; c0 < n; c0 += chunk) {
    uint8_t* o = dst + static_cast<size_t>(c0 / chunk) * cb;
    std::memset(o, 0, cb);
    for (int c = 0; c < chunk; ++c) o[c % cb] |= static_cast<uint8_t>(codes[c0 + c] << (bits * (c / cb)));
  }
}

void UnpackKvCodes(const uint8_t* src, int n, int bits, int chunk, uint8_t* codes) {
  const int cb = chunk * bits / 8;
  const int mask = (1 << bits) - 1;
  for (int c0 = 0; c0 < n; c0 += chunk) {
    const uint8_t* p = src + static_cast<size_t>(c0 / chunk) * cb;
    for (int c = 0; c < chunk; ++c) codes[c0 + c] = (p[c % cb] >> (bits * (c / cb))) & mask;
  }
}

namespace {

// Asymmetric range [lo, lo + scale * (2^bits - 1)] for the values x[i * stride], i < n;
// with clip search, shrinks the range toward its centre while the squared error drops.
void FitRange(const float* x, int n, int stride, int bits, bool clip_search, uint16_t* scale_h,
              uint16_t* min_h) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < n; ++i) lo = std::min(lo, x[i * stride]), hi = std::max(hi, x[i * stride]);
  const int qmax = (1 << bits) - 1;
  auto quantize_err = [&](float a, float b, uint16_t* sh, uint16_t* mh) {
    *sh = F32ToF16((b - a) / qmax);
    *mh = F32ToF16(a);
    const float s = F16ToF32(*sh), m = F16ToF32(*mh);
    double err = 0;
    for (int i = 0; i < n; ++i) {
      const float v = x[i * stride];
      const float c = s > 0 ? std::clamp(std::nearbyint((v - m) / s), 0.0f, static_cast<float>(qmax)) : 0.0f;
      const double e = v - (m + s * c);
      err += e * e;
    }
    return err;
  };
  double best = quantize_err(lo, hi, scale_h, min_h);
  if (!clip_search || hi <= lo) return;
  const float mid = 0.5f * (lo + hi), half = 0.5f * (hi - lo);
  // Also try ranges anchored at either end: outliers are usually one-sided.
  for (float c = 0.95f; c >= 0.55f; c -= 0.05f) {
    const float cand[3][2] = {{mid - c * half, mid + c * half},
                              {lo, lo + 2 * c * half},
                              {hi - 2 * c * half, hi}};
    for (const auto& r : cand) {
      uint16_t sh, mh;
      const double e = quantize_err(r[0], r[1], &sh, &mh);
      if (e < best) best = e, *scale_h = sh, *min_h = mh;
    }
  }
}

inline uint8_t Code(float v, float s, float m, int qmax) {
  if (!(s > 0)) return 0;
  return static_cast<uint8_t>(std::clamp(std::nearbyint((v - m) / s), 0.0f, static_cast<float>(qmax)));
}

// GEAR extras for one of K/V of one head: x and the dequantized xq are [bs][hd]. Picks the
// `outliers` largest errors as a sparse set, fits a rank-`rank` approximation of the remaining
// error by power iteration, and stores the sparse corrections relative to that approximation.
void EncodeExtras(const KvQuantLayout& l, const float* x, const float* xq, uint8_t* dst) {
  const int bs = l.block_size, hd = l.head_dim, r = l.rank;
  const size_t n = static_cast<size_t>(bs) * hd;
  std::vector<float> res(n);
  for (size_t i = 0; i < n; ++i) res[i] = x[i] - xq[i];
  std::vector<int> idx;
  if (l.outliers > 0) {
    idx.resize(n);
    for (size_t i = 0; i < n; ++i) idx[i] = static_cast<int>(i);
    std::partial_sort(idx.begin(), idx.begin() + l.outliers, idx.end(),
                      [&](int a, int b) { return std::fabs(res[a]) > std::fabs(res[b]); });
    idx.resize(l.outliers);
  }
  std::vector<float> rr = res;
  for (int i : idx) rr[i] = 0.0f;
  uint16_t* a_h = reinterpret_cast<uint16_t*>(dst);
  uint16_t* b_h = a_h + static_cast<size_t>(bs) * r;
  std::vector<float> a(bs), b(hd), approx(n, 0.0f);
  for (int k = 0; k < r; ++k) {
    // Start from the row of largest norm.
    int best = 0;
    double best_n = -1;
    for (int t = 0; t < bs; ++t) {
      double nn = 0;
      for (int d = 0; d < hd; ++d) nn += rr[t * hd + d] * rr[t * hd + d];
      if (nn > best_n) best_n = nn, best = t;
    }
    for (int d = 0; d < hd; ++d) b[d] = rr[best * hd + d];
    for (int it = 0; it < 10; ++it) {
      double bb = 0;
      for (int d = 0; d < hd; ++d) bb += b[d] * b[d];
      if (bb <= 0) break;
      for (int t = 0; t < bs; ++t) {
        double s = 0;
        for (int d = 0; d < hd; ++d) s += rr[t * hd + d] * b[d];
        a[t] = static_cast<float>(s / bb);
      }
      double aa = 0;
      for (int t = 0; t < bs; ++t) aa += a[t] * a[t];
      if (aa <= 0) break;
      for (int d = 0; d < hd; ++d) {
        double s = 0;
        for (int t = 0; t < bs; ++t) s += rr[t * hd + d] * a[t];
        b[d] = static_cast<float>(s / aa);
      }
    }
    // Balance the factors' magnitudes for fp16, then store and subtract the rounded product.
    double na = 0, nb = 0;
    for (float v : a) na += v * v;
    for (float v : b) nb += v * v;
    const float f = (na > 0 && nb > 0) ? static_cast<float>(std::sqrt(std::sqrt(nb / na))) : 1.0f;
    for (int t = 0; t < bs; ++t) a_h[t * r + k] = F32ToF16(a[t] * f);
    for (int d = 0; d < hd; ++d) b_h[d * r + k] = F32ToF16(b[d] / f);
    for (int t = 0; t < bs; ++t) {
      for (int d = 0; d < hd; ++d) {
        const float p = F16ToF32(a_h[t * r + k]) * F16ToF32(b_h[d * r + k]);
        rr[t * hd + d] -= p;
        approx[t * hd + d] += p;
      }
    }
  }
  uint8_t* o = dst + 2u * r * (bs + hd);
  for (int i = 0; i < l.outliers; ++i) {
    const uint16_t ix = static_cast<uint16_t>(idx[i]);
    const uint16_t v = F32ToF16(res[idx[i]] - approx[idx[i]]);
    std::memcpy(o + 4 * i, &ix, 2);
    std::memcpy(o + 4 * i + 2, &v, 2);
  }
}

// Adds the GEAR extras' contribution to token t's row y[hd].
void AddExtras(const KvQuantLayout& l, const uint8_t* src, int t, float* y) {
  const int hd = l.head_dim, r = l.rank;
  const uint16_t* a_h = reinterpret_cast<const uint16_t*>(src);
  const uint16_t* b_h = a_h + static_cast<size_t>(l.block_size) * r;
  for (int k = 0; k < r; ++k) {
    const float a = F16ToF32(a_h[t * r + k]);
    for (int d = 0; d < hd; ++d) y[d] += a * F16ToF32(b_h[d * r + k]);
  }
  const uint8_t* o = src + 2u * r * (l.block_size + hd);
  for (int i = 0; i < l.outliers; ++i) {
    uint16_t ix, v;
    std::memcpy(&ix, o + 4 * i, 2);
    std::memcpy(&v, o + 4 * i + 2, 2);
    if (ix / hd == t) y[ix % hd] += F16ToF32(v);
  }
}

}  // namespace

void KvFitRange(const float* x, int n, int stride, int bits, bool clip_search, uint16_t* scale_h,
                uint16_t* min_h) {
  FitRange(x, n, stride, bits, clip_search, scale_h, min_h);
}

void KvQuantEncodeBlock(const KvQuantLayout& l, const uint16_t* stage, uint8_t* dst,
                        bool clip_search) {
  const int bs = l.block_size, hd = l.head_dim, ng = l.n_groups(), C = l.chunk();
  const size_t half = static_cast<size_t>(l.n_kv_heads) * bs * hd;
  std::vector<float> kx(static_cast<size_t>(bs) * hd), vx(kx.size());
  std::vector<uint8_t> codes(hd);
  std::memset(dst, 0, kKvQuantHeader);
  for (int h = 0; h < l.n_kv_heads; ++h) {
    const uint16_t* ks = stage + static_cast<size_t>(h) * bs * hd;
    const uint16_t* vs = stage + half + static_cast<size_t>(h) * bs * hd;
    for (size_t i = 0; i < kx.size(); ++i) kx[i] = F16ToF32(ks[i]), vx[i] = F16ToF32(vs[i]);
    uint8_t* kh = dst + kKvQuantHeader + l.HeadBytes() * h;
    uint16_t* kscale = reinterpret_cast<uint16_t*>(kh);
    uint16_t* kmin = kscale + hd;
    uint8_t* kcodes = kh + 4 * hd;
    const bool ck = clip_search && l.k_bits <= 4, cv = clip_search && l.v_bits <= 4;
    for (int d = 0; d < hd; ++d) FitRange(kx.data() + d, bs, hd, l.k_bits, ck, &kscale[d], &kmin[d]);
    const int kq = (1 << l.k_bits) - 1, vq = (1 << l.v_bits) - 1;
    for (int t = 0; t < bs; ++t) {
      for (int d = 0; d < hd; ++d) {
        codes[d] = Code(kx[static_cast<size_t>(t) * hd + d], F16ToF32(kscale[d]), F16ToF32(kmin[d]), kq);
      }
      PackKvCodes(codes.data(), hd, l.k_bits, C, kcodes + l.KRowBytes() * t);
    }
    uint8_t* vh = kh + l.KHeadBytes();
    uint16_t* vparam = reinterpret_cast<uint16_t*>(vh);
    uint8_t* vcodes = vh + static_cast<size_t>(bs) * ng * 4;
    for (int t = 0; t < bs; ++t) {
      const float* row = vx.data() + static_cast<size_t>(t) * hd;
      for (int g = 0; g < ng; ++g) {
        uint16_t* p = vparam + (static_cast<size_t>(t) * ng + g) * 2;
        FitRange(row + g * l.v_group, l.v_group, 1, l.v_bits, cv, &p[0], &p[1]);
        const float s = F16ToF32(p[0]), m = F16ToF32(p[1]);
        for (int d = g * l.v_group; d < (g + 1) * l.v_group; ++d) codes[d] = Code(row[d], s, m, vq);
      }
      PackKvCodes(codes.data(), hd, l.v_bits, C, vcodes + l.VRowBytes() * t);
    }
    if (l.rank > 0 || l.outliers > 0) {
      // Extras fit the error of the base codes: decode the base (extras still zero).
      uint8_t* ex = kh + l.KHeadBytes() + l.VHeadBytes();
      std::memset(ex, 0, 2 * l.ExtraBytes());
      std::vector<float> kq(kx.size()), vq(vx.size());
      for (int t = 0; t < bs; ++t) {
        KvQuantDecodeToken(l, dst, h, t, kq.data() + static_cast<size_t>(t) * hd,
                           vq.data() + static_cast<size_t>(t) * hd);
      }
      EncodeExtras(l, kx.data(), kq.data(), ex);
      EncodeExtras(l, vx.data(), vq.data(), ex + l.ExtraBytes());
    }
  }
  const uint32_t sealed = kKvQuantSealed;
  std::memcpy(dst, &sealed, 4);
}

void KvQuantDecodeToken(const KvQuantLayout& l, const uint8_t* block, int h, int slot, float* k,
                        float* v) {
  const int hd = l.head_dim, ng = l.n_groups(), C = l.chunk();
  std::vector<uint8_t> codes(hd);
  const uint8_t* kh = block + kKvQuantHeader + l.HeadBytes() * h;
  const uint16_t* kscale = reinterpret_cast<const uint16_t*>(kh);
  const uint16_t* kmin = kscale + hd;
  UnpackKvCodes(kh + 4 * hd + l.KRowBytes() * slot, hd, l.k_bits, C, codes.data());
  for (int d = 0; d < hd; ++d) k[d] = F16ToF32(kmin[d]) + F16ToF32(kscale[d]) * codes[d];
  const uint8_t* vh = kh + l.KHeadBytes();
  const uint16_t* vparam = reinterpret_cast<const uint16_t*>(vh) + static_cast<size_t>(slot) * ng * 2;
  UnpackKvCodes(vh + static_cast<size_t>(l.block_size) * ng * 4 + l.VRowBytes() * slot, hd,
                l.v_bits, C, codes.data());
  for (int d = 0; d < hd; ++d) {
    const int g = d / l.v_group;
    v[d] = F16ToF32(vparam[2 * g + 1]) + F16ToF32(vparam[2 * g]) * codes[d];
  }
  if (l.rank > 0 || l.outliers > 0) {
    const uint8_t* ex = kh + l.KHeadBytes() + l.VHeadBytes();
    AddExtras(l, ex, slot, k);
    AddExtras(l, ex + l.ExtraBytes(), slot, v);
  }
}

void AttendKvQuantRef(const KvQuantLayout& l, int n_heads, const float* q,
                      const uint8_t* const* blocks, const uint16_t* tail_stage, int n_ctx,
                      float scale, float* out, float* scratch, int head_begin, int head_end) {
  const int group = n_heads / l.n_kv_heads, hd = l.head_dim, bs = l.block_size;
  const int last = (n_ctx - 1) / bs;
  const size_t half = static_cast<size_t>(l.n_kv_heads) * bs * hd;
  std::vector<float> kt(hd), vt(hd);
  auto token = [&](int kvh, int t) {
    const int b = t / bs, slot = t % bs;
    if (b == last && tail_stage != nullptr) {
      const size_t base = (static_cast<size_t>(kvh) * bs + slot) * hd;
      for (int d = 0; d < hd; ++d) {
        kt[d] = F16ToF32(tail_stage[base + d]);
        vt[d] = F16ToF32(tail_stage[half + base + d]);
      }
    } else {
      KvQuantDecodeToken(l, blocks[b], kvh, slot, kt.data(), vt.data());
    }
  };
  for (int h = head_begin; h < head_end; ++h) {
    const int kvh = h / group;
    const float* qh = q + static_cast<size_t>(h) * hd;
    for (int t = 0; t < n_ctx; ++t) {
      token(kvh, t);
      double s = 0;
      for (int d = 0; d < hd; ++d) s += static_cast<double>(qh[d]) * kt[d];
      scratch[t] = static_cast<float>(s) * scale;
    }
    SoftmaxInPlaceRef(scratch, n_ctx);
    float* oh = out + static_cast<size_t>(h) * hd;
    for (int d = 0; d < hd; ++d) oh[d] = 0.0f;
    for (int t = 0; t < n_ctx; ++t) {
      token(kvh, t);
      for (int d = 0; d < hd; ++d) oh[d] += scratch[t] * vt[d];
    }
  }
}

void AttendKvQuant(const KvQuantLayout& l, int n_heads, const float* q,
                   const uint8_t* const* blocks, const uint16_t* tail_stage, int n_ctx,
                   float scale, float* out, float* scratch, int head_begin, int head_end) {
  if (ActiveIsa() == CpuIsa::kAvx512 && l.chunk() == 16 && l.head_dim <= 256) {
    return AttendKvQuantAvx512(l, n_heads, q, blocks, tail_stage, n_ctx, scale, out, scratch,
                               head_begin, head_end);
  }
  AttendKvQuantRef(l, n_heads, q, blocks, tail_stage, n_ctx, scale, out, scratch, head_begin,
                   head_end);
}

}  // namespace compressd::kernels
