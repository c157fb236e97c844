// Pack functions of the quantized formats (see kernels/quant.h for the layouts).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "kernels/quant.h"
#include "kernels/types.h"

namespace compressd::kernels {
namespace {

int64_t RowBytes(int bits, int64_t cols_pad) { return cols_pad / kQuantChunk * ChunkBytes(bits); }

// Writes 32 codes (each < 2^bits) into one chunk.
void PackChunk(const uint8_t* q, int bits, uint8_t* out) {
  switch (bits) {
    case 8:
      std::memcpy(out, q, 32);
      return;
    case 4:
      for (int j = 0; j < 16; ++j) out[j] = static_cast<uint8_t>((q[j] & 15) | (q[j + 16] << 4));
      return;
    case 2:
    case 3: {
      for (int j = 0; j < 8; ++j) {
        out[j] = static_cast<uint8_t>((q[j] & 3) | ((q[j + 8] & 3) << 2) | ((q[j + 16] & 3) << 4) |
                                      ((q[j + 24] & 3) << 6));
      }
      if (bits == 3) {
        uint32_t hi = 0;
        for (int j = 0; j < 32; ++j) hi |= static_cast<uint32_t>((q[j] >> 2) & 1) << j;
        std::memcpy(out + 8, &hi, 4);
      }
      return;
    }
    default:
      return;
  }
}

float RoundF16(float v) { return F16ToF32(F32ToF16(v)); }

// Round half to even of x in [0, 2^22): exactly std::nearbyint in the default rounding mode
// (adding and subtracting 1.5 * 2^23 leaves x's integer part), without the library call that
// baseline x86-64 code makes of nearbyint, so the fit loop below vectorizes. Callers clamp
// to [0, qmax] first: clamp-then-round equals round-then-clamp for integer bounds.
inline float RoundClamped(float x) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23 (no -ffast-math: not reassociated)
  return (x + kMagic) - kMagic;
}

// Best (scale, min) for one group of values on a 2^bits grid: asymmetric min/max, then a
// search over shrunk ranges minimising the (weighted) squared error.
void FitGroup(const float* v, const float* cw, int64_t len, int bits, float* scale, float* min) {
  const int qmax = (1 << bits) - 1;
  float lo = v[0], hi = v[0];
  for (int64_t i = 1; i < len; ++i) {
    lo = std::min(lo, v[i]);
    hi = std::max(hi, v[i]);
  }
  lo = std::min(lo, 0.0f);
  hi = std::max(hi, 0.0f);
  float best_err = INFINITY, best_s = 0, best_m = 0;
  const int steps = 16;
  for (int a = 0; a <= steps; ++a) {
    for (int b = 0; b <= (bits <= 3 ? 4 : 0); ++b) {
      // Shrink the top and (independently, for low bits) the bottom of the range.
      const float fh = 1.0f - 0.5f * a / steps;
      const float fl = 1.0f - 0.1f * b;
      float l = lo * fl, h = hi * fh;
      float s = (h - l) / qmax;
      float m = l;
      if (s <= 0) s = 1e-8f;
      RoundGroupParams(&s, &m);
      double err = 0;
      for (int64_t i = 0; i < len; ++i) {
        const float q = RoundClamped(std::clamp((v[i] - m) / s, 0.0f, static_cast<float>(qmax)));
        const float d = q * s + m - v[i];
        err += static_cast<double>(d) * d * (cw ? cw[i] : 1.0f);
      }
      if (err < best_err) {
        best_err = static_cast<float>(err);
        best_s = s;
        best_m = m;
      }
    }
  }
  *scale = best_s;
  *min = best_m;
}

uint8_t QuantizeValue(float v, float s, float m, int qmax) {
  return static_cast<uint8_t>(RoundClamped(std::clamp((v - m) / s, 0.0f, static_cast<float>(qmax))));
}

// Fits and quantizes one row: codes [cols_pad] (padding 0), scale/min [n_groups].
void QuantizeRowGroups(const float* w, const float* cw, int64_t cols, int64_t cols_pad, int bits,
                       int64_t g, uint8_t* codes, float* scale, float* min) {
  const int qmax = (1 << bits) - 1;
  std::vector<float> buf(static_cast<size_t>(g)), wbuf(static_cast<size_t>(g));
  for (int64_t gi = 0; gi * g < cols_pad; ++gi) {
    const int64_t c0 = gi * g, len = std::max<int64_t>(0, std::min(g, cols - c0));
    if (len == 0) {
      scale[gi] = 0;
      min[gi] = 0;
      std::memset(codes + c0, 0, static_cast<size_t>(g));
      continue;
    }
    for (int64_t i = 0; i < len; ++i) {
      buf[i] = w[c0 + i];
      wbuf[i] = cw ? std::max(cw[c0 + i], 1e-12f) : 1.0f;
    }
    FitGroup(buf.data(), wbuf.data(), len, bits, &scale[gi], &min[gi]);
    for (int64_t i = 0; i < g; ++i) {
      codes[c0 + i] = i < len ? QuantizeValue(buf[i], scale[gi], min[gi], qmax) : 0;
    }
    // Padding codes decode to `min`; they multiply zero-padded activations, so any value
    // works, but 0 keeps the padding deterministic.
  }
}

}  // namespace

void RoundGroupParams(float* scale, float* min) {
  *scale = RoundF16(*scale);
  if (*scale <= 0) *scale = F16ToF32(1);  // smallest positive half
  *min = RoundF16(*min);
}

int64_t QuantColPad(const WeightFormat& f) {
  return std::max<int64_t>(64, f.group_size > 0 ? f.group_size : 0);
}

int64_t QuantGroupLen(const WeightFormat& f, int64_t cols) {
  return f.group_size > 0 ? f.group_size : QuantPaddedCols(f, cols);
}

WeightFormat GroupFormat(int bits, int group_size) {
  WeightFormat f;
  f.kind = WeightKind::kQuant;
  f.dtype = DType::kF16;
  f.bits = static_cast<uint8_t>(bits);
  f.symmetric = false;
  f.group_size = group_size;
  f.variant = static_cast<uint32_t>(QuantVariant::kGroup);
  return f;
}

WeightFormat Int8RowFormat(bool w8a8) {
  WeightFormat f;
  f.kind = WeightKind::kQuant;
  f.dtype = DType::kF32;
  f.bits = 8;
  f.symmetric = true;
  f.group_size = 0;
  f.variant = static_cast<uint32_t>(w8a8 ? QuantVariant::kW8A8 : QuantVariant::kInt8Row);
  return f;
}

WeightFormat LlmInt8Format() {
  WeightFormat f = Int8RowFormat(true);
  f.kind = WeightKind::kComposite;
  f.variant = static_cast<uint32_t>(QuantVariant::kLlmInt8);
  return f;
}

WeightFormat SpqrFormat(int bits) {
  WeightFormat f = GroupFormat(bits, 16);
  f.kind = WeightKind::kComposite;
  f.variant = static_cast<uint32_t>(QuantVariant::kSpqr);
  return f;
}

WeightFormat MixedFormat(int group_size) {
  WeightFormat f = GroupFormat(4, group_size);
  f.kind = WeightKind::kComposite;
  f.variant = static_cast<uint32_t>(QuantVariant::kMixed);
  return f;
}

std::string QuantFormatName(const WeightFormat& f) {
  switch (static_cast<QuantVariant>(f.variant)) {
    case QuantVariant::kGroup:
      return "int" + std::to_string(f.bits) + "-g" + std::to_string(f.group_size);
    case QuantVariant::kInt8Row: return "int8";
    case QuantVariant::kW8A8: return "w8a8";
    case QuantVariant::kLlmInt8: return "llm-int8";
    case QuantVariant::kSpqr: return "spqr" + std::to_string(f.bits);
    case QuantVariant::kMixed: return "mixed-8/4-g" + std::to_string(f.group_size);
  }
  return "quant?";
}

void PackedQuant::Bind() {
  view.data = buffers.empty() ? nullptr : buffers[0].data();
  view.data_bytes = buffers.empty() ? 0 : buffers[0].size();
  for (size_t i = 0; i < 4; ++i) {
    const bool has = i + 1 < buffers.size();
    view.aux[i] = has ? buffers[i + 1].data() : nullptr;
    view.aux_bytes[i] = has ? buffers[i + 1].size() : 0;
  }
}

uint64_t PackedQuant::bytes() const {
  uint64_t b = 0;
  for (const auto& v : buffers) b += v.size();
  return b;
}

PackedQuant PackGroupCodes(const uint8_t* codes, const float* scale, const float* min,
                           int64_t rows, int64_t cols, int bits, int group_size) {
  PackedQuant p;
  p.view.format = GroupFormat(bits, group_size);
  p.view.rows = rows;
  p.view.cols = cols;
  const int64_t cp = QuantPaddedCols(p.view.format, cols);
  const int64_t ng = cp / group_size, rb = RowBytes(bits, cp);
  p.buffers.resize(2);
  p.buffers[0].assign(static_cast<size_t>(rows * rb), 0);
  p.buffers[1].resize(static_cast<size_t>(rows * ng) * sizeof(GroupScale));
  auto* gs = reinterpret_cast<GroupScale*>(p.buffers[1].data());
  std::vector<uint8_t> q(static_cast<size_t>(cp));
  const int64_t ng_src = (cols + group_size - 1) / group_size;
  for (int64_t r = 0; r < rows; ++r) {
    std::fill(q.begin(), q.end(), 0);
    std::memcpy(q.data(), codes + r * cols, static_cast<size_t>(cols));
    for (int64_t c = 0; c < cp; c += kQuantChunk) {
      PackChunk(q.data() + c, bits, p.buffers[0].data() + r * rb + c / kQuantChunk * ChunkBytes(bits));
    }
    for (int64_t g = 0; g < ng; ++g) {
      float s = g < ng_src ? scale[r * ng_src + g] : 0.0f, m = g < ng_src ? min[r * ng_src + g] : 0.0f;
      gs[r * ng + g] = {F32ToF16(s), F32ToF16(m)};
    }
  }
  p.Bind();
  return p;
}

PackedQuant PackGroup(const float* w, int64_t rows, int64_t cols, int bits, int group_size,
                      const float* col_weight) {
  const WeightFormat f = GroupFormat(bits, group_size);
  const int64_t cp = QuantPaddedCols(f, cols);
  const int64_t ng = cp / group_size, ng_src = (cols + group_size - 1) / group_size;
  std::vector<uint8_t> codes(static_cast<size_t>(rows * cols));
  std::vector<float> sc(static_cast<size_t>(rows * ng_src)), mn(sc.size());
  std::vector<uint8_t> q(static_cast<size_t>(cp));
  std::vector<float> s(static_cast<size_t>(ng)), m(static_cast<size_t>(ng));
  for (int64_t r = 0; r < rows; ++r) {
    QuantizeRowGroups(w + r * cols, col_weight, cols, cp, bits, group_size, q.data(), s.data(),
                      m.data());
    std::memcpy(codes.data() + r * cols, q.data(), static_cast<size_t>(cols));
    std::copy(s.begin(), s.begin() + ng_src, sc.begin() + r * ng_src);
    std::copy(m.begin(), m.begin() + ng_src, mn.begin() + r * ng_src);
  }
  return PackGroupCodes(codes.data(), sc.data(), mn.data(), rows, cols, bits, group_size);
}

PackedQuant PackInt8Rows(const float* w, int64_t rows, int64_t cols, bool w8a8) {
  PackedQuant p;
  p.view.format = Int8RowFormat(w8a8);
  p.view.rows = rows;
  p.view.cols = cols;
  const int64_t cp = QuantPaddedCols(p.view.format, cols);
  p.buffers.resize(3);
  p.buffers[0].assign(static_cast<size_t>(rows * cp), 0);
  p.buffers[1].resize(static_cast<size_t>(rows) * 4);
  p.buffers[2].resize(static_cast<size_t>(rows) * 4);
  auto* q = reinterpret_cast<int8_t*>(p.buffers[0].data());
  auto* sc = reinterpret_cast<float*>(p.buffers[1].data());
  auto* sum = reinterpret_cast<int32_t*>(p.buffers[2].data());
  for (int64_t r = 0; r < rows; ++r) {
    const float* wr = w + r * cols;
    float amax = 0;
    for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(wr[c]));
    const float s = amax > 0 ? amax / 127.0f : 1.0f;
    int32_t acc = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const int v = static_cast<int>(std::clamp(std::nearbyint(wr[c] / s), -127.0f, 127.0f));
      q[r * cp + c] = static_cast<int8_t>(v);
      acc += v;
    }
    sc[r] = s;
    sum[r] = acc;
  }
  p.Bind();
  return p;
}

PackedQuant PackLlmInt8(const float* w, int64_t rows, int64_t cols,
                        const std::vector<uint32_t>& outlier_cols) {
  std::vector<uint32_t> out = outlier_cols;
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  while (!out.empty() && out.back() >= cols) out.pop_back();
  std::vector<float> base(w, w + rows * cols);
  std::vector<uint16_t> ow(static_cast<size_t>(rows) * out.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (size_t i = 0; i < out.size(); ++i) {
      ow[r * out.size() + i] = F32ToF16(base[r * cols + out[i]]);
      base[r * cols + out[i]] = 0.0f;
    }
  }
  PackedQuant p = PackInt8Rows(base.data(), rows, cols, true);
  p.view.format = LlmInt8Format();
  p.buffers.resize(5);
  p.buffers[3].resize(out.size() * 4);
  if (!out.empty()) std::memcpy(p.buffers[3].data(), out.data(), out.size() * 4);
  p.buffers[4].resize(ow.size() * 2);
  if (!ow.empty()) std::memcpy(p.buffers[4].data(), ow.data(), ow.size() * 2);
  p.Bind();
  return p;
}

PackedQuant PackSpqr(const float* w, int64_t rows, int64_t cols, int bits, float outlier_frac,
                     const float* col_weight) {
  PackedQuant p;
  p.view.format = SpqrFormat(bits);
  p.view.rows = rows;
  p.view.cols = cols;
  const int64_t g = 16, cp = QuantPaddedCols(p.view.format, cols), ng = cp / g;
  const int64_t rb = RowBytes(bits, cp);
  const int qmax = (1 << bits) - 1;
  p.buffers.resize(5);
  p.buffers[0].assign(static_cast<size_t>(rows * rb), 0);
  p.buffers[1].resize(static_cast<size_t>(rows) * sizeof(SpqrRowStats));
  p.buffers[2].resize(static_cast<size_t>(rows * ng * 2));
  p.buffers[3].resize(static_cast<size_t>(rows + 1) * 4);
  auto* stats = reinterpret_cast<SpqrRowStats*>(p.buffers[1].data());
  auto* row_ptr = reinterpret_cast<uint32_t*>(p.buffers[3].data());
  std::vector<SpqrOutlier> outl;
  std::vector<uint8_t> q(static_cast<size_t>(cp));
  std::vector<float> s(static_cast<size_t>(ng)), m(static_cast<size_t>(ng)), res(static_cast<size_t>(cols));
  std::vector<float> wrow(static_cast<size_t>(cols));
  const int64_t n_out_row = static_cast<int64_t>(std::ceil(outlier_frac * cols));
  row_ptr[0] = 0;
  for (int64_t r = 0; r < rows; ++r) {
    std::copy(w + r * cols, w + (r + 1) * cols, wrow.begin());
    // Outliers first: the largest-magnitude (weighted) deviations from the group mean are
    // removed before fitting the groups, so they do not stretch the range.
    std::vector<std::pair<float, int64_t>> cand;
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t g0 = c / g * g, g1 = std::min(cols, g0 + g);
      double mean = 0;
      for (int64_t i = g0; i < g1; ++i) mean += wrow[i];
      mean /= (g1 - g0);
      const float dev = std::fabs(wrow[c] - static_cast<float>(mean));
      cand.push_back({dev * std::sqrt(col_weight ? std::max(col_weight[c], 1e-12f) : 1.0f), c});
    }
    const int64_t k = std::min<int64_t>(n_out_row, cols);
    std::partial_sort(cand.begin(), cand.begin() + k, cand.end(),
                      [](const auto& a, const auto& b) { return a.first > b.first; });
    std::vector<int64_t> oc;
    for (int64_t i = 0; i < k; ++i) oc.push_back(cand[i].second);
    std::sort(oc.begin(), oc.end());
    std::vector<float> fit = wrow;
    std::vector<float> cwr(static_cast<size_t>(cols), 1.0f);
    if (col_weight) std::copy(col_weight, col_weight + cols, cwr.begin());
    for (int64_t c : oc) cwr[c] = 0.0f;  // outliers do not count when fitting groups
    QuantizeRowGroups(fit.data(), cwr.data(), cols, cp, bits, g, q.data(), s.data(), m.data());
    // Second level: 8-bit codes of scale and min over the row's range.
    float smin = INFINITY, smax = -INFINITY, mmin = INFINITY, mmax = -INFINITY;
    const int64_t ng_src = (cols + g - 1) / g;
    for (int64_t i = 0; i < ng_src; ++i) {
      smin = std::min(smin, s[i]);
      smax = std::max(smax, s[i]);
      mmin = std::min(mmin, m[i]);
      mmax = std::max(mmax, m[i]);
    }
    const float s0 = RoundF16(smin), m0 = RoundF16(mmin);
    float ds = RoundF16((smax - s0) / 255.0f), dm = RoundF16((mmax - m0) / 255.0f);
    stats[r] = {F32ToF16(s0), F32ToF16(ds), F32ToF16(m0), F32ToF16(dm)};
    uint8_t* sm = p.buffers[2].data() + r * ng * 2;
    for (int64_t gi = 0; gi < ng; ++gi) {
      uint8_t sc = 0, mc = 0;
      if (gi < ng_src) {
        sc = ds > 0 ? static_cast<uint8_t>(std::clamp(std::nearbyint((s[gi] - s0) / ds), 0.0f, 255.0f)) : 0;
        mc = dm > 0 ? static_cast<uint8_t>(std::clamp(std::nearbyint((m[gi] - m0) / dm), 0.0f, 255.0f)) : 0;
      }
      sm[gi * 2] = sc;
      sm[gi * 2 + 1] = mc;
      // Requantize the group against the stored (8-bit) scale/min.
      float sq = s0 + sc * ds, mq = m0 + mc * dm;
      if (sq <= 0) sq = 1e-8f;
      for (int64_t i = gi * g; i < std::min(cols, (gi + 1) * g); ++i) {
        q[i] = QuantizeValue(wrow[i], sq, mq, qmax);
        res[i] = wrow[i] - (q[i] * sq + mq);
      }
    }
    for (int64_t c : oc) outl.push_back({static_cast<uint16_t>(c), F32ToF16(res[c])});
    row_ptr[r + 1] = static_cast<uint32_t>(outl.size());
    for (int64_t c = 0; c < cp; c += kQuantChunk) {
      PackChunk(q.data() + c, bits, p.buffers[0].data() + r * rb + c / kQuantChunk * ChunkBytes(bits));
    }
  }
  p.buffers[4].resize(outl.size() * sizeof(SpqrOutlier) + 4);  // never empty
  if (!outl.empty()) std::memcpy(p.buffers[4].data(), outl.data(), outl.size() * sizeof(SpqrOutlier));
  p.Bind();
  return p;
}

PackedQuant PackMixed(const float* w, int64_t rows, int64_t cols,
                      const std::vector<uint8_t>& row_bits, int group_size,
                      const float* col_weight) {
  PackedQuant p;
  p.view.format = MixedFormat(group_size);
  p.view.rows = rows;
  p.view.cols = cols;
  const int64_t cp = QuantPaddedCols(p.view.format, cols), ng = cp / group_size;
  p.buffers.resize(4);
  p.buffers[1].resize(static_cast<size_t>(rows * ng) * sizeof(GroupScale));
  p.buffers[2].resize(static_cast<size_t>(rows + 1) * 8);
  p.buffers[3].resize(static_cast<size_t>(rows));
  auto* gs = reinterpret_cast<GroupScale*>(p.buffers[1].data());
  auto* off = reinterpret_cast<uint64_t*>(p.buffers[2].data());
  off[0] = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int b = row_bits[r] >= 8 ? 8 : 4;
    p.buffers[3][r] = static_cast<uint8_t>(b);
    off[r + 1] = off[r] + RowBytes(b, cp);
  }
  p.buffers[0].assign(off[rows], 0);
  std::vector<uint8_t> q(static_cast<size_t>(cp));
  std::vector<float> s(static_cast<size_t>(ng)), m(static_cast<size_t>(ng));
  for (int64_t r = 0; r < rows; ++r) {
    const int b = p.buffers[3][r];
    QuantizeRowGroups(w + r * cols, col_weight, cols, cp, b, group_size, q.data(), s.data(),
                      m.data());
    for (int64_t g = 0; g < ng; ++g) gs[r * ng + g] = {F32ToF16(s[g]), F32ToF16(m[g])};
    for (int64_t c = 0; c < cp; c += kQuantChunk) {
      PackChunk(q.data() + c, b, p.buffers[0].data() + off[r] + c / kQuantChunk * ChunkBytes(b));
    }
  }
  p.Bind();
  return p;
}

}  // namespace compressd::kernels
