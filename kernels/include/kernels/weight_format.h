// WeightFormat: the POD descriptor of how one linear layer's weights are stored, and
// PackedWeight: a non-owning view of those bytes. The engine owns the memory (mmap'd
// checkpoint or packed buffers); kernels only read it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/types.h"

namespace compressd::kernels {

enum class WeightKind : uint8_t {
  kDense = 0,      // dtype elements, row-major [rows][cols]
  kQuant = 1,      // integer codes + per-group scales (and zeros), optional outliers
  kLowRank = 2,    // W ~= U * V (two dense or quantized factors)
  kSparse = 3,     // bitmap/structured sparsity + values
  kComposite = 4,  // a base format plus a correction (outliers, residual)
  kEntropy = 5,    // lossless entropy-coded values (DFloat11: kernels/dfloat11.h)
};

enum class SparsityPattern : uint8_t { kNone = 0, kUnstructured = 1, kTwoFour = 2, kGroup = 3 };

struct WeightFormat {
  WeightKind kind = WeightKind::kDense;
  DType dtype = DType::kF32;        // dense element type; for quant: the scale type
  uint8_t bits = 0;                 // code width for kQuant (8, 4, 3, 2)
  bool symmetric = true;            // kQuant: no zero point when true
  int32_t group_size = 0;           // kQuant: input columns per scale; 0 = per output row
  int32_t rank = 0;                 // kLowRank
  SparsityPattern sparsity = SparsityPattern::kNone;
  uint32_t variant = 0;             // format-specific packing variant (see each format header)
  // In-memory byte order of the codes: 0 = the format's canonical order (what packers and
  // checkpoints hold); kernels may ask for a kernel-specific order at load (quant.h,
  // kLayoutA8Superblock). Never written to checkpoints.
  uint8_t layout = 0;
};

// Non-owning view of a packed linear layer y = x W^T, W of shape [rows][cols].
// Buffers are format-specific; each format header documents what data/aux hold.
struct PackedWeight {
  WeightFormat format;
  int64_t rows = 0;  // output features
  int64_t cols = 0;  // input features
  const void* data = nullptr;
  size_t data_bytes = 0;
  const void* aux[4] = {nullptr, nullptr, nullptr, nullptr};
  size_t aux_bytes[4] = {0, 0, 0, 0};
};

// Bytes of the primary buffer of a dense weight.
inline size_t DenseBytes(DType dtype, int64_t rows, int64_t cols) {
  return static_cast<size_t>(rows) * static_cast<size_t>(cols) * DTypeSize(dtype);
}

}  // namespace compressd::kernels
