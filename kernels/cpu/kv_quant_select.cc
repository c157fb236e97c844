// Token-selective KV blocks (kernels/kv_quant.h, KvSelectLayout): the encoder that splits each
// head's tokens into hi / lo / evicted-and-merged by importance, the token decoder and the
// attention reference (the oracle of kv_select_avx512.cc) and the run-time ISA dispatch.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/kv_quant.h"
#include "kernels/types.h"

namespace compressd::kernels {

namespace {

constexpr size_t kHeadHeader = 16;  // uint64 mask, uint32 n_hi, uint32 n_merged

bool PerChannelKeys(int bits) { return bits == 2 || bits == 4; }

// UnpackKvCodes without per-element division (the layout of kv_quant.h: channel j * cb + i of a
// chunk is bits j*b.. of byte i, cb = chunk * bits / 8); written so the compiler vectorises it.
inline void Unpack(const uint8_t* src, int n, int bits, int chunk, uint8_t* codes) {
  if (bits == 8) {
    std::memcpy(codes, src, n);
    return;
  }
  const int cb = chunk * bits / 8, per = 8 / bits;
  const uint8_t mask = static_cast<uint8_t>((1 << bits) - 1);
  for (int c0 = 0; c0 < n; c0 += chunk) {
    const uint8_t* p = src + (c0 / chunk) * cb;
    uint8_t* o = codes + c0;
    for (int j = 0; j < per; ++j) {
      for (int i = 0; i < cb; ++i)
        o[j * cb + i] = static_cast<uint8_t>((p[i] >> (bits * j)) & mask);
    }
  }
}

struct HeadView {
  uint64_t mask = 0;
  uint32_t n_hi = 0;
  uint32_t n_merged = 0;
  const uint16_t* hi_kp = nullptr;  // scale[hd] then min[hd]
  const uint16_t* lo_kp = nullptr;
  const uint16_t* merge = nullptr;  // K[hd], V[hd], bias
};

size_t HeadFixedOffset(const KvSelectLayout& l, int h) {
  return kKvQuantHeader + l.HeadFixedBytes() * h;
}

HeadView ReadHead(const KvSelectLayout& l, const uint8_t* block, int h) {
  HeadView v;
  const uint8_t* p = block + HeadFixedOffset(l, h);
  std::memcpy(&v.mask, p, 8);
  std::memcpy(&v.n_hi, p + 8, 4);
  std::memcpy(&v.n_merged, p + 12, 4);
  p += kHeadHeader;
  if (PerChannelKeys(l.hi_bits)) {
    v.hi_kp = reinterpret_cast<const uint16_t*>(p);
    p += 4u * l.head_dim;
  }
  if (PerChannelKeys(l.lo_bits)) {
    v.lo_kp = reinterpret_cast<const uint16_t*>(p);
    p += 4u * l.head_dim;
  }
  if (l.lo_bits == 0 && l.merge) v.merge = reinterpret_cast<const uint16_t*>(p);
  return v;
}

// Row pool offsets of head h's first hi and first lo row.
void RowStarts(const KvSelectLayout& l, const uint8_t* block, int h, size_t* hi_off,
               size_t* lo_off) {
  size_t n_hi_before = 0;
  for (int j = 0; j < h; ++j) {
    uint32_t n;
    std::memcpy(&n, block + HeadFixedOffset(l, j) + 8, 4);
    n_hi_before += n;
  }
  const size_t pool = kKvQuantHeader + l.HeadFixedBytes() * l.n_kv_heads;
  *hi_off = pool + n_hi_before * l.RowBytes(l.hi_bits);
  const size_t lo_pool = pool + static_cast<size_t>(l.n_hi) * l.RowBytes(l.hi_bits);
  const size_t n_lo_before = static_cast<size_t>(h) * l.block_size - n_hi_before;
  *lo_off = lo_pool + (l.lo_bits > 0 ? n_lo_before * l.RowBytes(l.lo_bits) : 0);
}

// Per-token groups: params (scale, min)[ng] f16 then codes.
void EncodeTokenGroups(const KvSelectLayout& l, const float* x, int bits, bool clip, uint8_t* dst) {
  const int hd = l.head_dim, ng = l.n_groups(), qmax = (1 << bits) - 1;
  uint16_t* par = reinterpret_cast<uint16_t*>(dst);
  uint8_t codes[512];
  for (int g = 0; g < ng; ++g) {
    KvFitRange(x + g * l.v_group, l.v_group, 1, bits, clip, &par[2 * g], &par[2 * g + 1]);
    const float s = F16ToF32(par[2 * g]), m = F16ToF32(par[2 * g + 1]);
    for (int d = g * l.v_group; d < (g + 1) * l.v_group; ++d) {
      codes[d] =
          s > 0
              ? static_cast<uint8_t>(std::clamp(std::nearbyint((x[d] - m) / s), 0.0f, float(qmax)))
              : 0;
    }
  }
  PackKvCodes(codes, hd, bits, l.chunk(), dst + 4u * ng);
}

void DecodeTokenGroups(const KvSelectLayout& l, const uint8_t* src, int bits, float* x) {
  const int hd = l.head_dim, ng = l.n_groups();
  const uint16_t* par = reinterpret_cast<const uint16_t*>(src);
  uint8_t codes[512];
  Unpack(src + 4u * ng, hd, bits, l.chunk(), codes);
  for (int g = 0; g < ng; ++g) {
    const float s = F16ToF32(par[2 * g]), m = F16ToF32(par[2 * g + 1]);
    for (int d = g * l.v_group; d < (g + 1) * l.v_group; ++d) x[d] = m + s * codes[d];
  }
}

size_t TokenGroupBytes(const KvSelectLayout& l, int bits) {
  return 4u * l.n_groups() + static_cast<size_t>(l.head_dim) * bits / 8;
}

// One row (K then V) of `bits`; kp: per-channel key params (scale[hd], min[hd]) for bits <= 4.
void EncodeRow(const KvSelectLayout& l, int bits, const float* k, const float* v,
               const uint16_t* kp, uint8_t* dst) {
  const int hd = l.head_dim;
  if (bits == 16) {
    uint16_t* o = reinterpret_cast<uint16_t*>(dst);
    for (int d = 0; d < hd; ++d) o[d] = F32ToF16(k[d]), o[hd + d] = F32ToF16(v[d]);
    return;
  }
  if (bits == 8) {
    EncodeTokenGroups(l, k, 8, false, dst);
    EncodeTokenGroups(l, v, 8, false, dst + TokenGroupBytes(l, 8));
    return;
  }
  const int qmax = (1 << bits) - 1;
  uint8_t codes[512];
  for (int d = 0; d < hd; ++d) {
    const float s = F16ToF32(kp[d]), m = F16ToF32(kp[hd + d]);
    codes[d] =
        s > 0 ? static_cast<uint8_t>(std::clamp(std::nearbyint((k[d] - m) / s), 0.0f, float(qmax)))
              : 0;
  }
  PackKvCodes(codes, hd, bits, l.chunk(), dst);
  EncodeTokenGroups(l, v, bits, true, dst + static_cast<size_t>(hd) * bits / 8);
}

void DecodeRow(const KvSelectLayout& l, int bits, const uint8_t* src, const float* kscale,
               const float* kmin, float* k, float* v) {
  const int hd = l.head_dim;
  if (bits == 16) {
    const uint16_t* s = reinterpret_cast<const uint16_t*>(src);
    for (int d = 0; d < hd; ++d) k[d] = F16ToF32(s[d]), v[d] = F16ToF32(s[hd + d]);
    return;
  }
  if (bits == 8) {
    DecodeTokenGroups(l, src, 8, k);
    DecodeTokenGroups(l, src + TokenGroupBytes(l, 8), 8, v);
    return;
  }
  uint8_t codes[512];
  Unpack(src, hd, bits, l.chunk(), codes);
  for (int d = 0; d < hd; ++d) k[d] = kmin[d] + kscale[d] * codes[d];
  DecodeTokenGroups(l, src + static_cast<size_t>(hd) * bits / 8, bits, v);
}

// Per-channel key params over the tokens `slots` of x ([bs][hd]), written as scale[hd], min[hd].
void FitChannels(const KvSelectLayout& l, const float* x, const std::vector<int>& slots, int bits,
                 uint16_t* kp) {
  const int hd = l.head_dim;
  if (slots.empty()) {
    std::memset(kp, 0, 4u * hd);
    return;
  }
  std::vector<float> col(slots.size());
  for (int d = 0; d < hd; ++d) {
    for (size_t i = 0; i < slots.size(); ++i) col[i] = x[static_cast<size_t>(slots[i]) * hd + d];
    KvFitRange(col.data(), static_cast<int>(col.size()), 1, bits, true, &kp[d], &kp[hd + d]);
  }
}

void ChannelParams(const uint16_t* kp, int hd, float* scale, float* mn) {
  for (int d = 0; d < hd; ++d) scale[d] = F16ToF32(kp[d]), mn[d] = F16ToF32(kp[hd + d]);
}

}  // namespace

size_t KvSelectLayout::RowBytes(int bits) const {
  if (bits == 16) return 4u * head_dim;
  if (bits == 8) return 2 * (4u * n_groups() + head_dim);
  return 2u * head_dim * bits / 8 + 4u * n_groups();
}

size_t KvSelectLayout::HeadFixedBytes() const {
  size_t b = kHeadHeader;
  if (PerChannelKeys(hi_bits)) b += 4u * head_dim;
  if (PerChannelKeys(lo_bits)) b += 4u * head_dim;
  if (lo_bits == 0 && merge) b += 4u * head_dim + 4;
  return b;
}

bool KvSelectLayout::Valid() const {
  const bool hi_ok = hi_bits == 16 || hi_bits == 8 || hi_bits == 4 || hi_bits == 2;
  const bool lo_ok = lo_bits == 0 || lo_bits == 2 || lo_bits == 4 || lo_bits == 8;
  return hi_ok && lo_ok && block_size > 0 && block_size <= 64 && n_kv_heads > 0 && head_dim > 0 &&
         head_dim % 8 == 0 && head_dim <= 512 && v_group > 0 && head_dim % v_group == 0 &&
         n_hi >= 0 && n_hi <= block_size * n_kv_heads;
}

size_t KvSelectScratchFloats(const KvSelectLayout& l, int n_ctx) {
  return static_cast<size_t>(n_ctx) + 4u * l.head_dim + 64;
}

void KvSelectEncodeBlock(const KvSelectLayout& l, const uint16_t* stage, const float* score,
                         const uint8_t* forced, bool head_wise, uint8_t* dst) {
  const int bs = l.block_size, hd = l.head_dim, nkv = l.n_kv_heads;
  const size_t half = static_cast<size_t>(nkv) * bs * hd;
  std::memset(dst, 0, l.BlockBytes());
  // 1. Hi selection (head-wise budgets).
  std::vector<uint64_t> mask(nkv, 0);
  std::vector<int> count(nkv, 0);
  int left = l.n_hi;
  auto take = [&](int h, int t) {
    if (left == 0 || (mask[h] >> t & 1)) return;
    mask[h] |= uint64_t{1} << t;
    ++count[h];
    --left;
  };
  if (forced != nullptr) {
    for (int t = 0; t < bs; ++t) {
      for (int h = 0; h < nkv; ++h) {
        if (forced[t]) take(h, t);
      }
    }
  }
  // Slots of each head by descending score (ties: earlier slot first).
  std::vector<std::vector<int>> order(nkv);
  for (int h = 0; h < nkv; ++h) {
    order[h].resize(bs);
    for (int t = 0; t < bs; ++t) order[h][t] = t;
    const float* sc = score + static_cast<size_t>(h) * bs;
    std::stable_sort(order[h].begin(), order[h].end(), [&](int a, int b) { return sc[a] > sc[b]; });
  }
  const int quota = l.n_hi / nkv, extra = l.n_hi % nkv;
  for (int h = 0; h < nkv; ++h) {
    const int want = head_wise ? std::min(quota / 2, bs) : quota + (h < extra ? 1 : 0);
    for (int i = 0; i < bs && count[h] < want; ++i) take(h, order[h][i]);
  }
  if (head_wise) {
    std::vector<std::pair<float, int>> all;  // (score, h * bs + t)
    for (int h = 0; h < nkv; ++h) {
      for (int t = 0; t < bs; ++t) {
        if (!(mask[h] >> t & 1))
          all.emplace_back(score[static_cast<size_t>(h) * bs + t], h * bs + t);
      }
    }
    std::stable_sort(all.begin(), all.end(),
                     [](const auto& a, const auto& b) { return a.first > b.first; });
    for (const auto& [s, ht] : all) take(ht / bs, ht % bs);
  } else {
    // Uniform quotas are met above unless forced slots overdrew some head: fill in head order.
    for (int h = 0; h < nkv; ++h) {
      for (int i = 0; i < bs; ++i) take(h, order[h][i]);
    }
  }
  // 2. Per head: parameters, merge slot, rows.
  std::vector<float> kx(static_cast<size_t>(bs) * hd), vx(kx.size());
  std::vector<float> hs(hd), hm(hd), ls(hd), lm(hd);
  for (int h = 0; h < nkv; ++h) {
    const uint16_t* ks = stage + static_cast<size_t>(h) * bs * hd;
    const uint16_t* vs = stage + half + static_cast<size_t>(h) * bs * hd;
    for (size_t i = 0; i < kx.size(); ++i) kx[i] = F16ToF32(ks[i]), vx[i] = F16ToF32(vs[i]);
    std::vector<int> hi, lo;
    for (int t = 0; t < bs; ++t) (mask[h] >> t & 1 ? hi : lo).push_back(t);
    uint8_t* p = dst + HeadFixedOffset(l, h);
    const uint32_t n_hi = static_cast<uint32_t>(hi.size());
    const uint32_t n_merged = l.lo_bits == 0 ? static_cast<uint32_t>(lo.size()) : 0;
    std::memcpy(p, &mask[h], 8);
    std::memcpy(p + 8, &n_hi, 4);
    std::memcpy(p + 12, &n_merged, 4);
    p += kHeadHeader;
    uint16_t* hi_kp = nullptr;
    uint16_t* lo_kp = nullptr;
    if (PerChannelKeys(l.hi_bits)) {
      hi_kp = reinterpret_cast<uint16_t*>(p);
      FitChannels(l, kx.data(), hi, l.hi_bits, hi_kp);
      p += 4u * hd;
    }
    if (PerChannelKeys(l.lo_bits)) {
      lo_kp = reinterpret_cast<uint16_t*>(p);
      FitChannels(l, kx.data(), lo, l.lo_bits, lo_kp);
      p += 4u * hd;
    }
    if (l.lo_bits == 0 && l.merge) {
      // Importance-weighted average of the evicted tokens; bias log(count).
      uint16_t* m = reinterpret_cast<uint16_t*>(p);
      std::vector<double> mk(hd, 0.0), mv(hd, 0.0);
      double wsum = 0;
      for (int t : lo) {
        const double w = std::max(0.0f, score[static_cast<size_t>(h) * bs + t]) + 1e-6;
        wsum += w;
        for (int d = 0; d < hd; ++d) {
          mk[d] += w * kx[static_cast<size_t>(t) * hd + d];
          mv[d] += w * vx[static_cast<size_t>(t) * hd + d];
        }
      }
      for (int d = 0; d < hd; ++d) {
        m[d] = F32ToF16(wsum > 0 ? static_cast<float>(mk[d] / wsum) : 0.0f);
        m[hd + d] = F32ToF16(wsum > 0 ? static_cast<float>(mv[d] / wsum) : 0.0f);
      }
      m[2 * hd] = F32ToF16(lo.empty() ? 0.0f : std::log(static_cast<float>(lo.size())));
    }
    size_t hi_off, lo_off;
    RowStarts(l, dst, h, &hi_off, &lo_off);
    for (size_t i = 0; i < hi.size(); ++i) {
      const size_t t = hi[i];
      EncodeRow(l, l.hi_bits, kx.data() + t * hd, vx.data() + t * hd, hi_kp,
                dst + hi_off + i * l.RowBytes(l.hi_bits));
    }
    if (l.lo_bits > 0) {
      for (size_t i = 0; i < lo.size(); ++i) {
        const size_t t = lo[i];
        EncodeRow(l, l.lo_bits, kx.data() + t * hd, vx.data() + t * hd, lo_kp,
                  dst + lo_off + i * l.RowBytes(l.lo_bits));
      }
    }
  }
  const uint32_t sealed = kKvQuantSealed;
  std::memcpy(dst, &sealed, 4);
}

int KvSelectDecodeToken(const KvSelectLayout& l, const uint8_t* block, int h, int slot, float* k,
                        float* v) {
  const int hd = l.head_dim;
  const HeadView hv = ReadHead(l, block, h);
  size_t hi_off, lo_off;
  RowStarts(l, block, h, &hi_off, &lo_off);
  const uint64_t below = slot == 0 ? 0 : (hv.mask & (~uint64_t{0} >> (64 - slot)));
  const int hi_before = __builtin_popcountll(below);
  std::vector<float> s(hd), m(hd);
  if (hv.mask >> slot & 1) {
    if (hv.hi_kp) ChannelParams(hv.hi_kp, hd, s.data(), m.data());
    DecodeRow(l, l.hi_bits, block + hi_off + hi_before * l.RowBytes(l.hi_bits), s.data(), m.data(),
              k, v);
    return 1;
  }
  if (l.lo_bits > 0) {
    if (hv.lo_kp) ChannelParams(hv.lo_kp, hd, s.data(), m.data());
    DecodeRow(l, l.lo_bits, block + lo_off + (slot - hi_before) * l.RowBytes(l.lo_bits), s.data(),
              m.data(), k, v);
    return 2;
  }
  for (int d = 0; d < hd; ++d) {
    k[d] = hv.merge ? F16ToF32(hv.merge[d]) : 0.0f;
    v[d] = hv.merge ? F16ToF32(hv.merge[hd + d]) : 0.0f;
  }
  return 0;
}

void AttendKvSelectRef(const KvSelectLayout& l, int n_heads, const float* q,
                       const uint8_t* const* blocks, const uint16_t* const* stages,
                       float* const* stage_acc, int n_ctx, float scale, float* out, float* scratch,
                       int head_begin, int head_end) {
  const int group = n_heads / l.n_kv_heads, hd = l.head_dim, bs = l.block_size;
  const int nb = (n_ctx + bs - 1) / bs;
  const size_t half = static_cast<size_t>(l.n_kv_heads) * bs * hd;
  // scratch: k, v and two param rows (the first n_ctx floats are left unused).
  float* kt = scratch + n_ctx;
  float* vt = kt + hd;
  float* ps = vt + hd;
  float* pm = ps + hd;
  std::vector<float> ps_lo(hd), pm_lo(hd);
  // The query heads of one KV head are processed together, so that each row is decoded once
  // for all of them. Online softmax per head: running max mx, running sum den, output in out.
  constexpr int kMaxGroup = 16;
  float mx[kMaxGroup];
  double den[kMaxGroup];
  for (int h0 = head_begin; h0 < head_end;) {
    const int kvh = h0 / group;
    const int h1 = std::min(head_end, (kvh + 1) * group);
    for (int hb = h0; hb < h1; hb += kMaxGroup) {
      const int he = std::min(h1, hb + kMaxGroup), ng = he - hb;
      for (int i = 0; i < ng; ++i) {
        mx[i] = -std::numeric_limits<float>::infinity();
        den[i] = 0;
        float* oh = out + static_cast<size_t>(hb + i) * hd;
        for (int d = 0; d < hd; ++d) oh[d] = 0.0f;
      }
      // Adds the current row (kt, vt), with logit bias `bias`, to every head of the group.
      auto add = [&](float bias) {
        for (int i = 0; i < ng; ++i) {
          const float* qh = q + static_cast<size_t>(hb + i) * hd;
          float s = 0;
          for (int d = 0; d < hd; ++d) s += qh[d] * kt[d];
          const float logit = s * scale + bias;
          float* oh = out + static_cast<size_t>(hb + i) * hd;
          if (logit > mx[i]) {
            const float c = std::isinf(mx[i]) ? 0.0f : std::exp(mx[i] - logit);
            den[i] *= c;
            for (int d = 0; d < hd; ++d) oh[d] *= c;
            mx[i] = logit;
          }
          const float p = std::exp(logit - mx[i]);
          den[i] += p;
          for (int d = 0; d < hd; ++d) oh[d] += p * vt[d];
        }
      };
      for (int b = 0; b < nb; ++b) {
        const int ntok = std::min(bs, n_ctx - b * bs);
        if (stages != nullptr && stages[b] != nullptr) {
          const uint16_t* st = stages[b];
          for (int t = 0; t < ntok; ++t) {
            const size_t base = (static_cast<size_t>(kvh) * bs + t) * hd;
            for (int d = 0; d < hd; ++d) {
              kt[d] = F16ToF32(st[base + d]);
              vt[d] = F16ToF32(st[half + base + d]);
            }
            add(0.0f);
          }
          continue;
        }
        const uint8_t* blk = blocks[b];
        const HeadView hv = ReadHead(l, blk, kvh);
        size_t hi_off, lo_off;
        RowStarts(l, blk, kvh, &hi_off, &lo_off);
        if (hv.hi_kp) ChannelParams(hv.hi_kp, hd, ps, pm);
        if (hv.lo_kp) ChannelParams(hv.lo_kp, hd, ps_lo.data(), pm_lo.data());
        int hi_i = 0, lo_i = 0;
        for (int t = 0; t < ntok; ++t) {
          if (hv.mask >> t & 1) {
            DecodeRow(l, l.hi_bits, blk + hi_off + hi_i++ * l.RowBytes(l.hi_bits), ps, pm, kt, vt);
          } else if (l.lo_bits > 0) {
            DecodeRow(l, l.lo_bits, blk + lo_off + lo_i++ * l.RowBytes(l.lo_bits), ps_lo.data(),
                      pm_lo.data(), kt, vt);
          } else {
            continue;  // evicted: represented by the merge slot
          }
          add(0.0f);
        }
        if (hv.merge != nullptr && hv.n_merged > 0 && ntok == bs) {
          for (int d = 0; d < hd; ++d) {
            kt[d] = F16ToF32(hv.merge[d]);
            vt[d] = F16ToF32(hv.merge[hd + d]);
          }
          add(F16ToF32(hv.merge[2 * hd]));
        }
      }
      for (int i = 0; i < ng; ++i) {
        const float inv = den[i] > 0 ? static_cast<float>(1.0 / den[i]) : 0.0f;
        float* oh = out + static_cast<size_t>(hb + i) * hd;
        for (int d = 0; d < hd; ++d) oh[d] *= inv;
        if (stage_acc == nullptr || stages == nullptr) continue;
        // Probabilities of the staged tokens (fp16, cheap to re-read) for the importance sums.
        const float* qh = q + static_cast<size_t>(hb + i) * hd;
        for (int b = 0; b < nb; ++b) {
          if (stages[b] == nullptr || stage_acc[b] == nullptr) continue;
          const int ntok = std::min(bs, n_ctx - b * bs);
          float* acc = stage_acc[b] + static_cast<size_t>(kvh) * bs;
          for (int t = 0; t < ntok; ++t) {
            const uint16_t* kr = stages[b] + (static_cast<size_t>(kvh) * bs + t) * hd;
            float s = 0;
            for (int d = 0; d < hd; ++d) s += qh[d] * F16ToF32(kr[d]);
            acc[t] += std::exp(s * scale - mx[i]) * inv;
          }
        }
      }
    }
    h0 = h1;
  }
}

bool KvSelectAvx512Supports(const KvSelectLayout& l) {
  return l.Valid() && l.v_group % l.chunk() == 0 && l.n_groups() <= 16;
}

void AttendKvSelect(const KvSelectLayout& l, int n_heads, const float* q,
                    const uint8_t* const* blocks, const uint16_t* const* stages,
                    float* const* stage_acc, int n_ctx, float scale, float* out, float* scratch,
                    int head_begin, int head_end) {
  if (ActiveIsa() == CpuIsa::kAvx512 && KvSelectAvx512Supports(l)) {
    return AttendKvSelectAvx512(l, n_heads, q, blocks, stages, stage_acc, n_ctx, scale, out,
                                scratch, head_begin, head_end);
  }
  AttendKvSelectRef(l, n_heads, q, blocks, stages, stage_acc, n_ctx, scale, out, scratch,
                    head_begin, head_end);
}

}  // namespace compressd::kernels
