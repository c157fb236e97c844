// GGUF Q8_0 / Q4_0 run directly: format table, validation and scalar reference.
#include <algorithm>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/gemm.h"
#include "kernels/ggml_quant.h"
#include "kernels/quant.h"
#include "kernels/sparse_tile.h"

namespace compressd::kernels {
namespace {

bool IsQ8(const WeightFormat& f) { return f.variant == kGgufVariantQ8_0; }

bool Supports(const WeightFormat& f) {
  if (f.kind != WeightKind::kQuant || f.group_size != kGgufBlock) return false;
  return (f.variant == kGgufVariantQ8_0 && f.bits == 8) ||
         (f.variant == kGgufVariantQ4_0 && f.bits == 4);
}

int64_t RowAlign(const WeightFormat&) { return 1; }

void FormatGemm(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
          int64_t row_begin, int64_t row_end) {
  switch (ActiveIsa()) {
    case CpuIsa::kAvx512:
      if (GgufUsesA8(w.format)) return GemmGgufA8Avx512(w, x, n, y, ldy, row_begin, row_end);
      return GemmGgufAvx512(w, x, n, y, ldy, row_begin, row_end);
    case CpuIsa::kAvx2: return GemmGgufAvx2(w, x, n, y, ldy, row_begin, row_end);
    case CpuIsa::kScalar: return GemmRef(w, x, n, y, ldy, row_begin, row_end);
  }
}

void Dequant(const PackedWeight& w, int64_t row_begin, int64_t row_end, float* out) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    GgufDecodeRef(w, r, 0, w.cols, out + (r - row_begin) * w.cols);
  }
}

}  // namespace

WeightFormat GgufQ8_0Format() {
  WeightFormat f;
  f.kind = WeightKind::kQuant;
  f.dtype = DType::kF16;
  f.bits = 8;
  f.symmetric = true;
  f.group_size = kGgufBlock;
  f.variant = kGgufVariantQ8_0;
  return f;
}

WeightFormat GgufQ4_0Format() {
  WeightFormat f = GgufQ8_0Format();
  f.bits = 4;
  f.variant = kGgufVariantQ4_0;
  return f;
}

size_t GgufQuantBytes(const WeightFormat& f, int64_t rows, int64_t cols) {
  const size_t blocks = static_cast<size_t>(rows) * static_cast<size_t>(cols / kGgufBlock);
  return blocks * (IsQ8(f) ? sizeof(GgufBlockQ8_0) : sizeof(GgufBlockQ4_0));
}

std::string ValidateGgufQuant(const PackedWeight& w) {
  if (!Supports(w.format)) return "not a GGUF Q8_0/Q4_0 format (variant 100/101, group 32)";
  if (w.rows < 0 || w.cols < 0 || w.cols % kGgufBlock) return "cols must be a multiple of 32";
  if (w.data_bytes != GgufQuantBytes(w.format, w.rows, w.cols)) return "data size";
  if (w.data_bytes && !w.data) return "missing data";
  return "";
}

void GgufDecodeRef(const PackedWeight& w, int64_t r, int64_t k0, int64_t len, float* out) {
  const int64_t bpr = w.cols / kGgufBlock;
  if (IsQ8(w.format)) {
    const auto* b = static_cast<const GgufBlockQ8_0*>(w.data) + r * bpr + k0 / kGgufBlock;
    for (int64_t i = 0; i < len / kGgufBlock; ++i) {
      const float d = F16ToF32(b[i].d);
      for (int j = 0; j < kGgufBlock; ++j) out[i * kGgufBlock + j] = d * b[i].qs[j];
    }
  } else {
    const auto* b = static_cast<const GgufBlockQ4_0*>(w.data) + r * bpr + k0 / kGgufBlock;
    for (int64_t i = 0; i < len / kGgufBlock; ++i) {
      const float d = F16ToF32(b[i].d);
      float* o = out + i * kGgufBlock;
      for (int j = 0; j < kGgufBlock / 2; ++j) {
        o[j] = d * static_cast<float>((b[i].qs[j] & 0x0f) - 8);
        o[j + 16] = d * static_cast<float>((b[i].qs[j] >> 4) - 8);
      }
    }
  }
}

// The int8-activation path is the default where it runs (AVX-512 VNNI), as llama.cpp quantizes
// activations for these formats too: Q4_0 2048x8192 GEMV ~2.5x faster, Q8_0 ~1.8x, at KL
// 2.8e-5 against the same file decoded to f32 on kdocs-7m (perplexity 82.95 -> 82.94 for
// Q4_0, about 60x less than Q4_0's own weight error; docs/QUALITY.md).
constexpr bool kGgufA8Default = true;

bool GgufUsesA8(const WeightFormat& f) {
  return kGgufA8Default && Supports(f) && ActiveIsa() == CpuIsa::kAvx512 &&
         GetCpuFeatures().avx512vnni;
}

void GemmGgufA8Ref(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                   int64_t row_begin, int64_t row_end) {
  const int64_t cols = w.cols, nb = cols / kGgufBlock;
  std::vector<int8_t> q(static_cast<size_t>(n * cols));
  std::vector<float> s(static_cast<size_t>(n * nb));
  for (int64_t t = 0; t < n; ++t) {
    quant_internal::QuantizeChunksQ8(x + t * cols, cols, cols, q.data() + t * cols,
                                     s.data() + t * nb);
  }
  for (int64_t r = row_begin; r < row_end; ++r) {
    for (int64_t t = 0; t < n; ++t) {
      const int8_t* qx = q.data() + t * cols;
      double acc = 0.0;
      for (int64_t b = 0; b < nb; ++b) {
        int32_t isum = 0;
        float d;
        if (IsQ8(w.format)) {
          const auto& blk = static_cast<const GgufBlockQ8_0*>(w.data)[r * nb + b];
          d = F16ToF32(blk.d);
          for (int j = 0; j < kGgufBlock; ++j) isum += blk.qs[j] * qx[b * kGgufBlock + j];
        } else {
          const auto& blk = static_cast<const GgufBlockQ4_0*>(w.data)[r * nb + b];
          d = F16ToF32(blk.d);
          for (int j = 0; j < kGgufBlock / 2; ++j) {
            isum += ((blk.qs[j] & 0x0f) - 8) * qx[b * kGgufBlock + j];
            isum += ((blk.qs[j] >> 4) - 8) * qx[b * kGgufBlock + j + 16];
          }
        }
        acc += static_cast<double>(d) * s[t * nb + b] * isum;
      }
      y[t * ldy + r] = static_cast<float>(acc);
    }
  }
}

void GemmGgufAvx2(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                  int64_t row_begin, int64_t row_end) {
  DecodedGemmAvx2(w, x, n, y, ldy, row_begin, row_end, GgufDecodeRef);
}

const FormatOps& GgufQuantFormatOps() {
  static const FormatOps ops = {Supports, RowAlign, FormatGemm, Dequant};
  return ops;
}

}  // namespace compressd::kernels
