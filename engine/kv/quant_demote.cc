#include "engine/kv/quant_demote.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "engine/core/logging.h"
#include "kernels/types.h"

namespace compressd {
namespace {

// Round half up of the clamped value (non-negative): no libm call on the baseline ISA.
uint8_t Code(float x, float s, float m, int qmax) {
  if (!(s > 0)) return 0;
  return static_cast<uint8_t>(std::clamp((x - m) / s, 0.0f, static_cast<float>(qmax)) + 0.5f);
}

int Half(int bits) { return bits == 8 ? 4 : (bits == 4 ? 2 : 0); }

// kernels::UnpackKvCodes without divisions (channel c of a chunk: byte c % cb, shift
// bits * (c / cb)), dequantized on the fly: out[d] = m[d] + s[d] * code[d].
void UnpackAffine(const uint8_t* src, int n, int bits, int chunk, const float* s, const float* m,
                  float* out) {
  const int cb = chunk * bits / 8, per = 8 / bits, mask = (1 << bits) - 1;
  for (int c0 = 0; c0 < n; c0 += chunk, src += cb) {
    for (int j = 0; j < per; ++j) {
      const int sh = bits * j;
      for (int b = 0; b < cb; ++b) {
        const int d = c0 + j * cb + b;
        out[d] = m[d] + s[d] * static_cast<float>((src[b] >> sh) & mask);
      }
    }
  }
}

// The same for values: one (scale, min) per group of vg channels (a multiple of the chunk).
void UnpackAffineGroups(const uint8_t* src, int n, int bits, int chunk, int vg, const float* sg,
                        const float* mg, float* out) {
  const int cb = chunk * bits / 8, per = 8 / bits, mask = (1 << bits) - 1;
  for (int c0 = 0; c0 < n; c0 += chunk, src += cb) {
    const float sc = sg[c0 / vg], m = mg[c0 / vg];
    for (int j = 0; j < per; ++j) {
      const int sh = bits * j;
      float* o = out + c0 + j * cb;
      for (int b = 0; b < cb; ++b) o[b] = m + sc * static_cast<float>((src[b] >> sh) & mask);
    }
  }
}

// Same least-squares clipped range as kernels::KvFitRange (clip_search), over x[i], i < n, with
// fewer candidates (clip factors 0.9 .. 0.6, centred or anchored at either end) and a
// reciprocal instead of a division per value: demotion runs on the serving path.
void FitRangeFast(const float* x, int n, int bits, bool clip_search, uint16_t* scale_h,
                  uint16_t* min_h) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < n; ++i) lo = std::min(lo, x[i]), hi = std::max(hi, x[i]);
  const int qmax = (1 << bits) - 1;
  auto err_of = [&](float a, float b, uint16_t* sh, uint16_t* mh) {
    *sh = kernels::F32ToF16((b - a) / qmax);
    *mh = kernels::F32ToF16(a);
    const float sc = kernels::F16ToF32(*sh), m = kernels::F16ToF32(*mh);
    const float inv = sc > 0 ? 1.0f / sc : 0.0f;
    float err = 0;
    for (int i = 0; i < n; ++i) {
      const float c = static_cast<float>(
          static_cast<int>(std::clamp((x[i] - m) * inv, 0.0f, static_cast<float>(qmax)) + 0.5f));
      const float e = x[i] - (m + sc * c);
      err += e * e;
    }
    return err;
  };
  float best = err_of(lo, hi, scale_h, min_h);
  if (!clip_search || hi <= lo) return;
  const float mid = 0.5f * (lo + hi), half = 0.5f * (hi - lo);
  for (float c : {0.9f, 0.8f, 0.7f, 0.6f}) {
    const float cand[3][2] = {
        {mid - c * half, mid + c * half}, {lo, lo + 2 * c * half}, {hi - 2 * c * half, hi}};
    for (const auto& r : cand) {
      uint16_t sh, mh;
      const float e = err_of(r[0], r[1], &sh, &mh);
      if (e < best) best = e, *scale_h = sh, *min_h = mh;
    }
  }
}

}  // namespace

bool DemotedLayoutOf(const kernels::KvQuantLayout& base, int min_bits, DemotedLayout* out) {
  DemotedLayout l;
  l.tokens = 2 * base.block_size;
  l.n_kv_heads = base.n_kv_heads;
  l.head_dim = base.head_dim;
  l.k_bits = Half(base.k_bits);
  l.v_bits = Half(base.v_bits);
  l.chunk = base.chunk();
  if (l.k_bits == 0 || l.v_bits == 0 || std::min(l.k_bits, l.v_bits) < min_bits) return false;
  if (base.head_dim % (2 * base.v_group) == 0) {
    l.vg = 2 * base.v_group;
    l.tg = 1;
  } else {
    l.vg = base.v_group;
    l.tg = 2;
  }
  if (l.BlockBytes() > base.BlockBytes()) return false;
  *out = l;
  return true;
}

bool IsDemotedBlock(const uint8_t* block) {
  uint32_t state;
  std::memcpy(&state, block, 4);
  return state == kKvDemoted;
}

void EncodeDemotedBlock(const DemotedLayout& l, const float* k, const float* v, bool clip_search,
                        uint8_t* dst) {
  const int T = l.tokens, hd = l.head_dim, ng = hd / l.vg;
  const int kq = (1 << l.k_bits) - 1, vq = (1 << l.v_bits) - 1;
  std::vector<uint8_t> codes(hd);
  std::vector<float> ks(hd), km(hd);
  std::vector<float> cell(static_cast<size_t>(l.tg) * l.vg), col(T);
  std::memset(dst, 0, kernels::kKvQuantHeader);
  for (int h = 0; h < l.n_kv_heads; ++h) {
    const float* kx = k + static_cast<size_t>(h) * T * hd;
    const float* vx = v + static_cast<size_t>(h) * T * hd;
    uint8_t* kh = dst + kernels::kKvQuantHeader + l.HeadBytes() * h;
    uint16_t* kscale = reinterpret_cast<uint16_t*>(kh);
    uint16_t* kmin = kscale + hd;
    uint8_t* kcodes = kh + 4 * hd;
    for (int d = 0; d < hd; ++d) {
      for (int t = 0; t < T; ++t) col[t] = kx[static_cast<size_t>(t) * hd + d];
      FitRangeFast(col.data(), T, l.k_bits, clip_search, &kscale[d], &kmin[d]);
    }
    for (int d = 0; d < hd; ++d) {
      ks[d] = kernels::F16ToF32(kscale[d]);
      km[d] = kernels::F16ToF32(kmin[d]);
    }
    for (int t = 0; t < T; ++t) {
      for (int d = 0; d < hd; ++d) {
        codes[d] = Code(kx[static_cast<size_t>(t) * hd + d], ks[d], km[d], kq);
      }
      kernels::PackKvCodes(codes.data(), hd, l.k_bits, l.chunk, kcodes + l.KRowBytes() * t);
    }
    uint16_t* vparam = reinterpret_cast<uint16_t*>(kcodes + l.KRowBytes() * T);
    uint8_t* vcodes = reinterpret_cast<uint8_t*>(vparam) + l.VParams() * 4;
    for (int t0 = 0; t0 < T; t0 += l.tg) {
      for (int g = 0; g < ng; ++g) {
        for (int i = 0; i < l.tg; ++i) {
          std::memcpy(cell.data() + static_cast<size_t>(i) * l.vg,
                      vx + static_cast<size_t>(t0 + i) * hd + g * l.vg, sizeof(float) * l.vg);
        }
        uint16_t* p = vparam + (static_cast<size_t>(t0 / l.tg) * ng + g) * 2;
        FitRangeFast(cell.data(), static_cast<int>(cell.size()), l.v_bits, clip_search, &p[0],
                     &p[1]);
      }
    }
    for (int t = 0; t < T; ++t) {
      const uint16_t* p = vparam + static_cast<size_t>(t / l.tg) * ng * 2;
      for (int d = 0; d < hd; ++d) {
        const int g = d / l.vg;
        codes[d] = Code(vx[static_cast<size_t>(t) * hd + d], kernels::F16ToF32(p[2 * g]),
                        kernels::F16ToF32(p[2 * g + 1]), vq);
      }
      kernels::PackKvCodes(codes.data(), hd, l.v_bits, l.chunk, vcodes + l.VRowBytes() * t);
    }
  }
  const uint32_t state = kKvDemoted, level = 1;
  std::memcpy(dst, &state, 4);
  std::memcpy(dst + 4, &level, 4);
}

void DecodeDemotedToken(const DemotedLayout& l, const uint8_t* block, int h, int slot, float* k,
                        float* v) {
  const int T = l.tokens, hd = l.head_dim, ng = hd / l.vg;
  uint8_t codes[512];
  CHECK(hd <= 512);
  const uint8_t* kh = block + kernels::kKvQuantHeader + l.HeadBytes() * h;
  const uint16_t* kscale = reinterpret_cast<const uint16_t*>(kh);
  const uint16_t* kmin = kscale + hd;
  const uint8_t* kcodes = kh + 4 * hd;
  kernels::UnpackKvCodes(kcodes + l.KRowBytes() * slot, hd, l.k_bits, l.chunk, codes);
  for (int d = 0; d < hd; ++d) {
    k[d] = kernels::F16ToF32(kmin[d]) + kernels::F16ToF32(kscale[d]) * codes[d];
  }
  const uint16_t* vparam = reinterpret_cast<const uint16_t*>(kcodes + l.KRowBytes() * T);
  const uint8_t* vcodes = reinterpret_cast<const uint8_t*>(vparam) + l.VParams() * 4;
  const uint16_t* p = vparam + static_cast<size_t>(slot / l.tg) * ng * 2;
  kernels::UnpackKvCodes(vcodes + l.VRowBytes() * slot, hd, l.v_bits, l.chunk, codes);
  for (int d = 0; d < hd; ++d) {
    const int g = d / l.vg;
    v[d] = kernels::F16ToF32(p[2 * g + 1]) + kernels::F16ToF32(p[2 * g]) * codes[d];
  }
}

void DecodeDemotedHead(const DemotedLayout& l, const uint8_t* block, int h, int n, float* k,
                       float* v) {
  const int T = l.tokens, hd = l.head_dim, ng = hd / l.vg;
  float s[512], m[512];
  CHECK(hd <= 512);
  const uint8_t* kh = block + kernels::kKvQuantHeader + l.HeadBytes() * h;
  const uint16_t* kscale = reinterpret_cast<const uint16_t*>(kh);
  const uint16_t* kmin = kscale + hd;
  const uint8_t* kcodes = kh + 4 * hd;
  for (int d = 0; d < hd; ++d)
    s[d] = kernels::F16ToF32(kscale[d]), m[d] = kernels::F16ToF32(kmin[d]);
  for (int t = 0; t < n; ++t) {
    UnpackAffine(kcodes + l.KRowBytes() * t, hd, l.k_bits, l.chunk, s, m,
                 k + static_cast<size_t>(t) * hd);
  }
  const uint16_t* vparam = reinterpret_cast<const uint16_t*>(kcodes + l.KRowBytes() * T);
  const uint8_t* vcodes = reinterpret_cast<const uint8_t*>(vparam) + l.VParams() * 4;
  for (int t = 0; t < n; ++t) {
    const uint16_t* p = vparam + static_cast<size_t>(t / l.tg) * ng * 2;
    for (int g = 0; g < ng; ++g) {
      s[g] = kernels::F16ToF32(p[2 * g]);
      m[g] = kernels::F16ToF32(p[2 * g + 1]);
    }
    UnpackAffineGroups(vcodes + l.VRowBytes() * t, hd, l.v_bits, l.chunk, l.vg, s, m,
                       v + static_cast<size_t>(t) * hd);
  }
}

void DecodeBaseHead(const kernels::KvQuantLayout& l, const uint8_t* block, int h, int n, float* k,
                    float* v) {
  const int hd = l.head_dim, ng = l.n_groups(), C = l.chunk();
  if (l.rank > 0 || l.outliers > 0) {  // GEAR: the reference decoder adds the extras
    for (int t = 0; t < n; ++t) {
      kernels::KvQuantDecodeToken(l, block, h, t, k + static_cast<size_t>(t) * hd,
                                  v + static_cast<size_t>(t) * hd);
    }
    return;
  }
  float s[512], m[512];
  CHECK(hd <= 512);
  const uint8_t* kh = block + kernels::kKvQuantHeader + l.HeadBytes() * h;
  const uint16_t* kscale = reinterpret_cast<const uint16_t*>(kh);
  const uint16_t* kmin = kscale + hd;
  for (int d = 0; d < hd; ++d)
    s[d] = kernels::F16ToF32(kscale[d]), m[d] = kernels::F16ToF32(kmin[d]);
  for (int t = 0; t < n; ++t) {
    UnpackAffine(kh + 4 * hd + l.KRowBytes() * t, hd, l.k_bits, C, s, m,
                 k + static_cast<size_t>(t) * hd);
  }
  const uint8_t* vh = kh + l.KHeadBytes();
  const uint16_t* vparam = reinterpret_cast<const uint16_t*>(vh);
  const uint8_t* vcodes = vh + static_cast<size_t>(l.block_size) * ng * 4;
  for (int t = 0; t < n; ++t) {
    const uint16_t* p = vparam + static_cast<size_t>(t) * ng * 2;
    for (int g = 0; g < ng; ++g) {
      s[g] = kernels::F16ToF32(p[2 * g]);
      m[g] = kernels::F16ToF32(p[2 * g + 1]);
    }
    UnpackAffineGroups(vcodes + l.VRowBytes() * t, hd, l.v_bits, C, l.v_group, s, m,
                       v + static_cast<size_t>(t) * hd);
  }
}

}  // namespace compressd
