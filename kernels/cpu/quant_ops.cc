// FormatOps table of the quantized formats (kQuant, kComposite), their scalar definition
// (DequantizeQuantRows), the scalar GEMM, and helpers shared by the per-ISA kernels.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/format_ops.h"
#include "kernels/ggml_quant.h"
#include "kernels/quant.h"
#include "kernels/types.h"

namespace compressd::kernels {
namespace quant_internal {

void UnpackChunk(const uint8_t* chunk, int bits, uint8_t* q) {
  switch (bits) {
    case 8:
      std::memcpy(q, chunk, 32);
      return;
    case 4:
      for (int j = 0; j < 16; ++j) {
        q[j] = chunk[j] & 15;
        q[j + 16] = chunk[j] >> 4;
      }
      return;
    case 2:
    case 3: {
      for (int j = 0; j < 8; ++j) {
        for (int k = 0; k < 4; ++k) q[j + 8 * k] = (chunk[j] >> (2 * k)) & 3;
      }
      if (bits == 3) {
        uint32_t hi;
        std::memcpy(&hi, chunk + 8, 4);
        for (int j = 0; j < 32; ++j) q[j] |= static_cast<uint8_t>(((hi >> j) & 1) << 2);
      }
      return;
    }
    default:
      std::memset(q, 0, 32);
  }
}

RowView RowCodes(const PackedWeight& w, int64_t r) {
  const WeightFormat& f = w.format;
  const int64_t cp = QuantPaddedCols(f, w.cols);
  const auto* base = static_cast<const uint8_t*>(w.data);
  if (static_cast<QuantVariant>(f.variant) == QuantVariant::kMixed) {
    const auto* off = static_cast<const uint64_t*>(w.aux[1]);
    const auto* bits = static_cast<const uint8_t*>(w.aux[2]);
    return {base + off[r], bits[r]};
  }
  return {base + r * (cp / kQuantChunk) * ChunkBytes(f.bits), f.bits};
}

void RowGroupParams(const PackedWeight& w, int64_t r, float* scale, float* min) {
  const WeightFormat& f = w.format;
  const int64_t cp = QuantPaddedCols(f, w.cols), ng = cp / f.group_size;
  if (static_cast<QuantVariant>(f.variant) == QuantVariant::kSpqr) {
    const SpqrRowStats st = static_cast<const SpqrRowStats*>(w.aux[0])[r];
    const float s0 = F16ToF32(st.s0), ds = F16ToF32(st.ds), m0 = F16ToF32(st.m0),
                dm = F16ToF32(st.dm);
    const uint8_t* sm = static_cast<const uint8_t*>(w.aux[1]) + r * ng * 2;
    for (int64_t g = 0; g < ng; ++g) {
      float s = s0 + sm[2 * g] * ds;
      if (s <= 0) s = 1e-8f;  // matches PackSpqr
      scale[g] = s;
      min[g] = m0 + sm[2 * g + 1] * dm;
    }
    return;
  }
  const GroupScale* gs = static_cast<const GroupScale*>(w.aux[0]) + r * ng;
  for (int64_t g = 0; g < ng; ++g) {
    scale[g] = F16ToF32(gs[g].d);
    min[g] = F16ToF32(gs[g].m);
  }
}

void AddRowCorrections(const PackedWeight& w, int64_t r, const float* x, int64_t ldx, int64_t n,
                       float* y, int64_t ldy) {
  const auto v = static_cast<QuantVariant>(w.format.variant);
  if (v == QuantVariant::kSpqr) {
    const auto* rp = static_cast<const uint32_t*>(w.aux[2]);
    const auto* o = static_cast<const SpqrOutlier*>(w.aux[3]);
    for (uint32_t i = rp[r]; i < rp[r + 1]; ++i) {
      const float val = F16ToF32(o[i].val);
      for (int64_t t = 0; t < n; ++t) y[t * ldy + r] += val * x[t * ldx + o[i].col];
    }
  } else if (v == QuantVariant::kLlmInt8) {
    const int64_t n_out = static_cast<int64_t>(w.aux_bytes[2] / 4);
    const auto* ids = static_cast<const uint32_t*>(w.aux[2]);
    const auto* ow = static_cast<const uint16_t*>(w.aux[3]) + r * n_out;
    for (int64_t t = 0; t < n; ++t) {
      float acc = 0;
      for (int64_t i = 0; i < n_out; ++i) acc += F16ToF32(ow[i]) * x[t * ldx + ids[i]];
      y[t * ldy + r] += acc;
    }
  }
}

void QuantizeActivations(const float* x, int64_t n, int64_t cols, int64_t cols_pad,
                         const uint32_t* outliers, int64_t n_out, uint8_t* xq, float* xscale) {
  for (int64_t t = 0; t < n; ++t) {
    const float* xt = x + t * cols;
    uint8_t* q = xq + t * cols_pad;
    float amax = 0;
    int64_t oi = 0;
    for (int64_t c = 0; c < cols; ++c) {
      if (oi < n_out && outliers[oi] == static_cast<uint32_t>(c)) {
        ++oi;
        continue;
      }
      amax = std::max(amax, std::fabs(xt[c]));
    }
    const float s = amax > 0 ? amax / 127.0f : 1.0f;
    const float inv = 1.0f / s;
    oi = 0;
    for (int64_t c = 0; c < cols; ++c) {
      int v = static_cast<int>(std::nearbyint(xt[c] * inv));
      if (oi < n_out && outliers[oi] == static_cast<uint32_t>(c)) {
        ++oi;
        v = 0;
      }
      q[c] = static_cast<uint8_t>(std::clamp(v, -127, 127) + 128);
    }
    std::memset(q + cols, 128, static_cast<size_t>(cols_pad - cols));
    xscale[t] = s;
  }
}

}  // namespace quant_internal

using namespace quant_internal;

bool QuantSupports(const WeightFormat& f) {
  if (f.kind != WeightKind::kQuant && f.kind != WeightKind::kComposite) return false;
  const auto v = static_cast<QuantVariant>(f.variant);
  const bool group_ok = f.group_size >= 16 && f.group_size <= 1024 &&
                        (f.group_size & (f.group_size - 1)) == 0;
  switch (v) {
    case QuantVariant::kGroup:
      return f.kind == WeightKind::kQuant &&
             (f.bits == 2 || f.bits == 3 || f.bits == 4 || f.bits == 8) && group_ok;
    case QuantVariant::kInt8Row:
    case QuantVariant::kW8A8:
      return f.kind == WeightKind::kQuant && f.bits == 8;
    case QuantVariant::kLlmInt8:
      return f.kind == WeightKind::kComposite && f.bits == 8;
    case QuantVariant::kSpqr:
      return f.kind == WeightKind::kComposite && (f.bits == 3 || f.bits == 4) && f.group_size == 16;
    case QuantVariant::kMixed:
      return f.kind == WeightKind::kComposite && group_ok;
  }
  return false;
}

void DequantizeQuantRows(const PackedWeight& w, int64_t row_begin, int64_t row_end, float* out) {
  const WeightFormat& f = w.format;
  const auto v = static_cast<QuantVariant>(f.variant);
  const int64_t cols = w.cols, cp = QuantPaddedCols(f, cols);
  if (v == QuantVariant::kInt8Row || v == QuantVariant::kW8A8 || v == QuantVariant::kLlmInt8) {
    const auto* q = static_cast<const int8_t*>(w.data);
    const auto* sc = static_cast<const float*>(w.aux[0]);
    for (int64_t r = row_begin; r < row_end; ++r) {
      float* o = out + (r - row_begin) * cols;
      for (int64_t c = 0; c < cols; ++c) o[c] = q[r * cp + c] * sc[r];
      if (v == QuantVariant::kLlmInt8) {
        const int64_t n_out = static_cast<int64_t>(w.aux_bytes[2] / 4);
        const auto* ids = static_cast<const uint32_t*>(w.aux[2]);
        const auto* ow = static_cast<const uint16_t*>(w.aux[3]) + r * n_out;
        for (int64_t i = 0; i < n_out; ++i) o[ids[i]] = F16ToF32(ow[i]);
      }
    }
    return;
  }
  const int64_t g = f.group_size, ng = cp / g;
  std::vector<float> s(static_cast<size_t>(ng)), m(static_cast<size_t>(ng));
  uint8_t q[32];
  // Superblock order (kLayoutA8Superblock): each row is put back in canonical order first.
  std::vector<uint8_t> canon;
  PackedWeight wc = w;
  // (Only 4-bit kGroup codes are ever put in that order: PermuteQuant4Superblocks.)
  if (f.layout == kLayoutA8Superblock) {
    canon.resize(static_cast<size_t>(cp / kQuantChunk * 16));
    wc.data = canon.data();
    wc.format.layout = 0;
  }
  for (int64_t r = row_begin; r < row_end; ++r) {
    float* o = out + (r - row_begin) * cols;
    RowGroupParams(w, r, s.data(), m.data());
    RowView rv;
    if (f.layout == kLayoutA8Superblock) {
      PermuteQuant4Superblocks(static_cast<const uint8_t*>(w.data) +
                                   r * static_cast<int64_t>(canon.size()),
                               canon.data(), 0, 1, cp, /*to_superblocks=*/false);
      rv = RowCodes(wc, 0);
    } else {
      rv = RowCodes(w, r);
    }
    for (int64_t c0 = 0; c0 < cols; c0 += kQuantChunk) {
      UnpackChunk(rv.codes + c0 / kQuantChunk * ChunkBytes(rv.bits), rv.bits, q);
      for (int64_t j = 0; j < kQuantChunk && c0 + j < cols; ++j) {
        const int64_t c = c0 + j;
        o[c] = q[j] * s[c / g] + m[c / g];
      }
    }
    if (v == QuantVariant::kSpqr) {
      const auto* rp = static_cast<const uint32_t*>(w.aux[2]);
      const auto* ol = static_cast<const SpqrOutlier*>(w.aux[3]);
      for (uint32_t i = rp[r]; i < rp[r + 1]; ++i) o[ol[i].col] += F16ToF32(ol[i].val);
    }
  }
}

// Scalar GEMM: the same arithmetic as the fast paths' definition, in double.
void GemmQuantRef(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                  int64_t row_begin, int64_t row_end) {
  const auto v = static_cast<QuantVariant>(w.format.variant);
  const int64_t cols = w.cols;
  if (v == QuantVariant::kW8A8 || v == QuantVariant::kLlmInt8) {
    // Definition of the W8A8 product: integer dot of per-token int8 activations with the
    // int8 codes, scaled; plus the fp16 outlier columns.
    const int64_t cp = QuantPaddedCols(w.format, cols);
    const int64_t n_out = v == QuantVariant::kLlmInt8 ? static_cast<int64_t>(w.aux_bytes[2] / 4) : 0;
    const auto* ids = n_out ? static_cast<const uint32_t*>(w.aux[2]) : nullptr;
    std::vector<uint8_t> xq(static_cast<size_t>(n * cp));
    std::vector<float> xs(static_cast<size_t>(n));
    QuantizeActivations(x, n, cols, cp, ids, n_out, xq.data(), xs.data());
    const auto* q = static_cast<const int8_t*>(w.data);
    const auto* sc = static_cast<const float*>(w.aux[0]);
    for (int64_t r = row_begin; r < row_end; ++r) {
      for (int64_t t = 0; t < n; ++t) {
        int64_t acc = 0;
        for (int64_t c = 0; c < cp; ++c) acc += (static_cast<int>(xq[t * cp + c]) - 128) * q[r * cp + c];
        y[t * ldy + r] = static_cast<float>(acc) * (xs[t] * sc[r]);
      }
      AddRowCorrections(w, r, x, cols, n, y, ldy);
    }
    return;
  }
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = row_begin; r < row_end; ++r) {
    DequantizeQuantRows(w, r, r + 1, row.data());
    for (int64_t t = 0; t < n; ++t) {
      double acc = 0.0;
      const float* xt = x + t * cols;
      for (int64_t c = 0; c < cols; ++c) acc += static_cast<double>(row[c]) * xt[c];
      y[t * ldy + r] = static_cast<float>(acc);
    }
  }
}

namespace {

// GGUF block formats (variant >= 100) live in ggml_quant.cc; the int formats here use < 100.
bool IsGguf(const WeightFormat& f) { return f.kind == WeightKind::kQuant && f.variant >= 100; }

bool Supports(const WeightFormat& f) {
  return IsGguf(f) ? GgufQuantFormatOps().supports(f) : QuantSupports(f);
}

int64_t RowAlign(const WeightFormat& f) {
  return IsGguf(f) ? GgufQuantFormatOps().row_align(f) : 4;
}

void Dequant(const PackedWeight& w, int64_t row_begin, int64_t row_end, float* out) {
  if (IsGguf(w.format)) return GgufQuantFormatOps().dequantize_rows(w, row_begin, row_end, out);
  DequantizeQuantRows(w, row_begin, row_end, out);
}

void GemmDispatch(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                  int64_t row_begin, int64_t row_end) {
  if (IsGguf(w.format)) return GgufQuantFormatOps().gemm(w, x, n, y, ldy, row_begin, row_end);
  // Codes in the W4A8 kernel's order: only that kernel and the reference read them.
  if (w.format.layout != 0 && !GemmUsesQuant4A8(w.format)) {
    return GemmQuantRef(w, x, n, y, ldy, row_begin, row_end);
  }
  const auto v = static_cast<QuantVariant>(w.format.variant);
  const bool int8_dot = v == QuantVariant::kW8A8 || v == QuantVariant::kLlmInt8;
  switch (ActiveIsa()) {
    case CpuIsa::kAvx512:
      if (!int8_dot || GetCpuFeatures().avx512vnni) {
        return GemmQuantAvx512(w, x, n, y, ldy, row_begin, row_end);
      }
      return GemmQuantAvx2(w, x, n, y, ldy, row_begin, row_end);
    case CpuIsa::kAvx2:
      return GemmQuantAvx2(w, x, n, y, ldy, row_begin, row_end);
    case CpuIsa::kScalar:
      return GemmQuantRef(w, x, n, y, ldy, row_begin, row_end);
  }
}

}  // namespace

const FormatOps& QuantFormatOps() {
  static const FormatOps ops = {Supports, RowAlign, GemmDispatch, Dequant};
  return ops;
}

}  // namespace compressd::kernels
