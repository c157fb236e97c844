// GGUF Q8_0 / Q4_0 run directly: format table, validation and scalar reference.
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/gemm.h"
#include "kernels/ggml_quant.h"
#include "kernels/quant.h"
#include "kernels/sparse_tile.h"

namespace compressd::kernels {
namespace {

bool IsQ8(const WeightFormat& f) { return f.variant == kGgufVariantQ8_0; }

bool IsSplit(const WeightFormat& f) { return f.layout == kLayoutGgufSplit; }

bool Supports(const WeightFormat& f) {
  if (f.kind != WeightKind::kQuant || f.group_size != kGgufBlock) return false;
  if (f.layout != 0 && !IsSplit(f)) return false;
  return (f.variant == kGgufVariantQ8_0 && f.bits == 8) ||
         (f.variant == kGgufVariantQ4_0 && f.bits == 4);
}

int64_t RowAlign(const WeightFormat&) { return 1; }

void FormatGemm(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
          int64_t row_begin, int64_t row_end) {
  switch (ActiveIsa()) {
    case CpuIsa::kAvx512:
      if (IsSplit(w.format)) {
        if (GemmUsesQuant4A8(w.format)) return GemmQuant4A8Avx512(w, x, n, y, ldy, row_begin, row_end);
        if (GemmUsesQuant8A8(w.format)) return GemmQuant8A8Avx512(w, x, n, y, ldy, row_begin, row_end);
        return GemmRef(w, x, n, y, ldy, row_begin, row_end);
      }
      if (GgufUsesA8(w.format)) return GemmGgufA8Avx512(w, x, n, y, ldy, row_begin, row_end);
      return GemmGgufAvx512(w, x, n, y, ldy, row_begin, row_end);
    case CpuIsa::kAvx2:
      if (IsSplit(w.format)) return GemmRef(w, x, n, y, ldy, row_begin, row_end);
      return GemmGgufAvx2(w, x, n, y, ldy, row_begin, row_end);
    case CpuIsa::kScalar: return GemmRef(w, x, n, y, ldy, row_begin, row_end);
  }
}

// Row r's blocks as the file stores them: in place for the file layout, rebuilt into *buf
// from the split layout (ggml_quant.h).
const uint8_t* FileBlocksOfRow(const PackedWeight& w, int64_t r, std::vector<uint8_t>* buf) {
  const int64_t bpr = w.cols / kGgufBlock;
  const size_t block_bytes = IsQ8(w.format) ? sizeof(GgufBlockQ8_0) : sizeof(GgufBlockQ4_0);
  const auto* base = static_cast<const uint8_t*>(w.data);
  if (!IsSplit(w.format)) return base + static_cast<size_t>(r * bpr) * block_bytes;
  buf->resize(static_cast<size_t>(bpr) * block_bytes);
  const int64_t row_bytes = IsQ8(w.format) ? w.cols : w.cols / 2;
  std::vector<uint8_t> codes(base + r * row_bytes, base + (r + 1) * row_bytes);
  if (!IsQ8(w.format)) PermuteQuant4Superblocks(codes.data(), codes.data(), 0, 1, w.cols, false);
  const uint8_t* d = base + w.rows * row_bytes + r * bpr * 2;
  const int64_t code_bytes = row_bytes / bpr;  // 32 (Q8_0) or 16 (Q4_0)
  for (int64_t b = 0; b < bpr; ++b) {
    uint8_t* out = buf->data() + b * block_bytes;
    std::memcpy(out, d + 2 * b, 2);
    for (int64_t j = 0; j < code_bytes; ++j) {
      out[2 + j] = IsQ8(w.format) ? codes[b * code_bytes + j] ^ 0x80 : codes[b * code_bytes + j];
    }
  }
  return buf->data();
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
  if (IsSplit(w.format) && w.cols % 64) return "split layout needs cols % 64 == 0";
  if (w.data_bytes != GgufQuantBytes(w.format, w.rows, w.cols)) return "data size";
  if (w.data_bytes && !w.data) return "missing data";
  return "";
}

void GgufDecodeRef(const PackedWeight& w, int64_t r, int64_t k0, int64_t len, float* out) {
  thread_local std::vector<uint8_t> buf;
  const uint8_t* row = FileBlocksOfRow(w, r, &buf);
  for (int64_t i = 0; i < len / kGgufBlock; ++i) {
    float* o = out + i * kGgufBlock;
    const int64_t blk = k0 / kGgufBlock + i;
    if (IsQ8(w.format)) {
      const auto& b = reinterpret_cast<const GgufBlockQ8_0*>(row)[blk];
      const float d = F16ToF32(b.d);
      for (int j = 0; j < kGgufBlock; ++j) o[j] = d * b.qs[j];
    } else {
      const auto& b = reinterpret_cast<const GgufBlockQ4_0*>(row)[blk];
      const float d = F16ToF32(b.d);
      for (int j = 0; j < kGgufBlock / 2; ++j) {
        o[j] = d * static_cast<float>((b.qs[j] & 0x0f) - 8);
        o[j + 16] = d * static_cast<float>((b.qs[j] >> 4) - 8);
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
  return kGgufA8Default && Supports(f) && !IsSplit(f) && VnniActive();
}

bool GgufSplitApplies(const WeightFormat& f, int64_t cols) {
  return f.layout == 0 && GgufUsesA8(f) && cols % 64 == 0;
}

void GgufToSplit(const WeightFormat& f, const uint8_t* src, uint8_t* dst, int64_t rows,
                 int64_t cols) {
  const int64_t blocks = rows * (cols / kGgufBlock);
  const int64_t block_bytes = IsQ8(f) ? sizeof(GgufBlockQ8_0) : sizeof(GgufBlockQ4_0);
  const int64_t code_bytes = block_bytes - 2;
  std::vector<uint16_t> d(static_cast<size_t>(blocks));
  for (int64_t i = 0; i < blocks; ++i) std::memcpy(&d[i], src + i * block_bytes, 2);
  // Codes forward: block i's codes move from block_bytes i + 2 to code_bytes i, never over a
  // block not yet read (code_bytes (i + 1) <= block_bytes (i + 1)).
  for (int64_t i = 0; i < blocks; ++i) {
    std::memmove(dst + code_bytes * i, src + i * block_bytes + 2, static_cast<size_t>(code_bytes));
  }
  std::memcpy(dst + code_bytes * blocks, d.data(), d.size() * sizeof(uint16_t));
  if (IsQ8(f)) {
    for (int64_t i = 0; i < code_bytes * blocks; ++i) dst[i] ^= 0x80;  // s8 -> u8 (q + 128)
  } else {
    PermuteQuant4Superblocks(dst, dst, 0, rows, cols, true);
  }
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
  std::vector<uint8_t> buf;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* row = FileBlocksOfRow(w, r, &buf);
    for (int64_t t = 0; t < n; ++t) {
      const int8_t* qx = q.data() + t * cols;
      double acc = 0.0;
      for (int64_t b = 0; b < nb; ++b) {
        int32_t isum = 0;
        float d;
        if (IsQ8(w.format)) {
          const auto& blk = reinterpret_cast<const GgufBlockQ8_0*>(row)[b];
          d = F16ToF32(blk.d);
          for (int j = 0; j < kGgufBlock; ++j) isum += blk.qs[j] * qx[b * kGgufBlock + j];
        } else {
          const auto& blk = reinterpret_cast<const GgufBlockQ4_0*>(row)[b];
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
