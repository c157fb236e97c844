// Scalar definition of the A8 products (4- and 8-bit group codes, per-row int8 codes x int8
// activations per 32-column chunk): the oracle of the AVX-512 VNNI kernels
// (quant_gemm_a8_avx512.cc, quant_gemm_8a8_avx512.cc). See QuantUsesA8 in quant.h.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/ggml_quant.h"
#include "kernels/quant.h"

namespace compressd::kernels {
namespace quant_internal {

void QuantizeChunksQ8(const float* x, int64_t cols, int64_t cols_pad, int8_t* q, float* scale) {
  for (int64_t c0 = 0; c0 < cols_pad; c0 += kQuantChunk) {
    const int64_t len = std::clamp<int64_t>(cols - c0, 0, kQuantChunk);
    float amax = 0.0f;
    for (int64_t j = 0; j < len; ++j) amax = std::max(amax, std::fabs(x[c0 + j]));
    // The same float operations as the vector code: s = amax / 127, q = rne(x * (127 / amax)).
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int64_t j = 0; j < kQuantChunk; ++j) {
      int v = 0;
      if (j < len) v = static_cast<int>(std::nearbyint(x[c0 + j] * inv));
      q[c0 + j] = static_cast<int8_t>(std::clamp(v, -127, 127));
    }
    scale[c0 / kQuantChunk] = amax / 127.0f;
  }
}

}  // namespace quant_internal

namespace {
// GGUF Q8_0 / Q4_0 in the split layout (ggml_quant.h), run by the int group kernels.
bool GgufSplit(const WeightFormat& f, uint32_t variant) {
  return f.kind == WeightKind::kQuant && f.variant == variant && f.layout == kLayoutGgufSplit &&
         VnniActive();
}
}  // namespace

bool QuantUsesA8(const WeightFormat& f) {
  if (f.kind != WeightKind::kQuant || !VnniActive()) return false;
  switch (static_cast<QuantVariant>(f.variant)) {
    case QuantVariant::kGroup:
      // Group 16 splits a 32-column chunk in two groups: the float path keeps it.
      return (f.bits == 2 || f.bits == 3 || f.bits == 4 || f.bits == 8) &&
             f.group_size >= kQuantChunk;
    // Per-row int8 (the `int8` preset) takes the A16 path instead (QuantUsesA16): with int8
    // activations its KL on kdocs-7m rose from 0.000022 to 0.000051 (issue #4 notes);
    // GemmQuant8A8Avx512 still computes it, tested, when called.
    default:
      return false;
  }
}

bool QuantUsesA16(const WeightFormat& f) {
  return f.kind == WeightKind::kQuant && VnniActive() &&
         static_cast<QuantVariant>(f.variant) == QuantVariant::kInt8Row;
}

void GemmQuant8A16Ref(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                      int64_t row_begin, int64_t row_end) {
  const int64_t cols = w.cols, cp = QuantPaddedCols(w.format, cols);
  const auto* codes = static_cast<const int8_t*>(w.data);
  const auto* row_scale = static_cast<const float*>(w.aux[0]);
  const int64_t nb = (cp + kA16Block - 1) / kA16Block;
  std::vector<int32_t> q(static_cast<size_t>(n * cp), 0);
  std::vector<float> s(static_cast<size_t>(n * nb));
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t c0 = b * kA16Block, c1 = std::min(cols, c0 + kA16Block);
      float amax = 0.0f;
      for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(x[t * cols + c]));
      // The same float operations as the vector code.
      const float inv = amax > 0.0f ? 32767.0f / amax : 0.0f;
      for (int64_t c = c0; c < c1; ++c) {
        const int v = static_cast<int>(std::nearbyint(x[t * cols + c] * inv));
        q[t * cp + c] = std::clamp(v, -32767, 32767);
      }
      s[t * nb + b] = amax / 32767.0f;
    }
  }
  for (int64_t r = row_begin; r < row_end; ++r) {
    for (int64_t t = 0; t < n; ++t) {
      double acc = 0.0;
      for (int64_t b = 0; b < nb; ++b) {
        int64_t dot = 0;
        for (int64_t c = b * kA16Block; c < std::min(cp, (b + 1) * kA16Block); ++c) {
          dot += int64_t{codes[r * cp + c]} * q[t * cp + c];
        }
        acc += static_cast<double>(dot) * s[t * nb + b];
      }
      y[t * ldy + r] = static_cast<float>(acc * row_scale[r]);
    }
  }
}

bool GemmUsesQuant8A8(const WeightFormat& f) {
  // GGUF Q8_0's split layout: the int8 group-32 kernel with min = -128 d.
  if (GgufSplit(f, kGgufVariantQ8_0)) return true;
  return QuantUsesA8(f) && static_cast<QuantVariant>(f.variant) == QuantVariant::kGroup &&
         f.bits != 4;
}

bool GemmUsesQuant4A8(const WeightFormat& f) {
  // GGUF Q4_0's split layout: the int4 group-32 kernel with min = -8 d.
  if (GgufSplit(f, kGgufVariantQ4_0)) return true;
  return QuantUsesA8(f) && static_cast<QuantVariant>(f.variant) == QuantVariant::kGroup &&
         f.bits == 4;
}

bool Quant4UsesSuperblocks(const WeightFormat& f) {
  return GemmUsesQuant4A8(f);
}

void PermuteQuant4Superblocks(const uint8_t* src, uint8_t* dst, int64_t row_begin,
                              int64_t row_end, int64_t cols_pad, bool to_superblocks) {
  const int64_t row_bytes = cols_pad / kQuantChunk * 16, nsb = cols_pad / kA8Superblock;
  uint32_t tmp[64];
  for (int64_t r = row_begin; r < row_end; ++r) {
    for (int64_t s = 0; s < nsb; ++s) {
      const int64_t off = r * row_bytes + s * 256;
      std::memcpy(tmp, src + off, sizeof(tmp));
      uint32_t out[64];
      for (int l = 0; l < 16; ++l) {
        for (int k = 0; k < 4; ++k) {
          // canonical word 4 l + k  <->  superblock word 16 k + l
          if (to_superblocks) {
            out[16 * k + l] = tmp[4 * l + k];
          } else {
            out[4 * l + k] = tmp[16 * k + l];
          }
        }
      }
      std::memcpy(dst + off, out, sizeof(out));
    }
    if (src != dst) {
      std::memcpy(dst + r * row_bytes + nsb * 256, src + r * row_bytes + nsb * 256,
                  static_cast<size_t>(row_bytes - nsb * 256));
    }
  }
}

void GemmQuantA8Ref(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                     int64_t row_begin, int64_t row_end) {
  const int64_t cols = w.cols, cp = QuantPaddedCols(w.format, cols);
  std::vector<float> xhat(static_cast<size_t>(n * cols));
  std::vector<int8_t> q(static_cast<size_t>(cp));
  std::vector<float> s(static_cast<size_t>(cp / kQuantChunk));
  for (int64_t t = 0; t < n; ++t) {
    quant_internal::QuantizeChunksQ8(x + t * cols, cols, cp, q.data(), s.data());
    for (int64_t c = 0; c < cols; ++c) xhat[t * cols + c] = q[c] * s[c / kQuantChunk];
  }
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = row_begin; r < row_end; ++r) {
    DequantizeQuantRows(w, r, r + 1, row.data());
    for (int64_t t = 0; t < n; ++t) {
      double acc = 0.0;
      for (int64_t c = 0; c < cols; ++c) acc += static_cast<double>(row[c]) * xhat[t * cols + c];
      y[t * ldy + r] = static_cast<float>(acc);
    }
  }
}

}  // namespace compressd::kernels
