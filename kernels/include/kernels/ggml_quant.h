// GGUF block formats run directly (no conversion at load): WeightKind::kQuant with
// `variant` >= 100. Variant numbering (shared with the int formats of quant_ops.cc, which use
// variants < 100; QuantFormatOps() forwards every variant >= 100 to GgufQuantFormatOps()):
//   kGgufVariantQ8_0 = 100  bits 8, group_size 32, dtype kF16 (scale), symmetric
//   kGgufVariantQ4_0 = 101  bits 4, group_size 32, dtype kF16 (scale), symmetric (offset 8)
// Layout: data = the GGUF blocks of the tensor as stored, row-major [rows][cols / 32]; cols
// must be a multiple of 32; aux unused. Block values (same as engine/model/ggml_blocks.h):
//   Q8_0: x = d * q;  Q4_0: x = d * (q - 8), byte j low nibble = element j, high = j + 16.
// Kernels: each 1024-column block of up to 4 rows is widened to fp32 in L1 and multiplied
// with the shared engine of kernels/sparse_tile.h (batch invariant, see there).
#pragma once

#include <cstdint>
#include <string>

#include "kernels/format_ops.h"
#include "kernels/weight_format.h"

namespace compressd::kernels {

inline constexpr uint32_t kGgufVariantQ8_0 = 100;
inline constexpr uint32_t kGgufVariantQ4_0 = 101;
inline constexpr int kGgufBlock = 32;

#pragma pack(push, 1)
struct GgufBlockQ8_0 {
  uint16_t d;  // fp16
  int8_t qs[kGgufBlock];
};
struct GgufBlockQ4_0 {
  uint16_t d;  // fp16
  uint8_t qs[kGgufBlock / 2];
};
#pragma pack(pop)
static_assert(sizeof(GgufBlockQ8_0) == 34, "GgufBlockQ8_0 must be 34 bytes");
static_assert(sizeof(GgufBlockQ4_0) == 18, "GgufBlockQ4_0 must be 18 bytes");

// The format descriptor of a GGUF Q8_0 / Q4_0 weight.
WeightFormat GgufQ8_0Format();
WeightFormat GgufQ4_0Format();
// Bytes of `rows` x `cols` in that format (cols % 32 == 0).
size_t GgufQuantBytes(const WeightFormat& f, int64_t rows, int64_t cols);
// "" when w's buffers match its format and shape, else what is wrong.
std::string ValidateGgufQuant(const PackedWeight& w);

// Table for kQuant variants >= 100 (supports/row_align/gemm/dequantize_rows).
const FormatOps& GgufQuantFormatOps();

// Per-ISA kernels (parity tests, benchmarks).
void GemmGgufAvx512(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                    int64_t row_begin, int64_t row_end);
void GemmGgufAvx2(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                  int64_t row_begin, int64_t row_end);
// Scalar decode of W[r][k0 .. k0 + len) (k0, len multiples of 32).
void GgufDecodeRef(const PackedWeight& w, int64_t r, int64_t k0, int64_t len, float* out);

}  // namespace compressd::kernels
