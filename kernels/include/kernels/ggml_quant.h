// GGUF block formats run directly (no conversion at load): WeightKind::kQuant with
// `variant` >= 100. Variant numbering (shared with the int formats of quant_ops.cc, which use
// variants < 100; QuantFormatOps() forwards every variant >= 100 to GgufQuantFormatOps()):
//   kGgufVariantQ8_0 = 100  bits 8, group_size 32, dtype kF16 (scale), symmetric
//   kGgufVariantQ4_0 = 101  bits 4, group_size 32, dtype kF16 (scale), symmetric (offset 8)
// Layout: data = the GGUF blocks of the tensor as stored, row-major [rows][cols / 32]; cols
// must be a multiple of 32; aux unused. Block values (same as engine/model/ggml_blocks.h):
//   Q8_0: x = d * q;  Q4_0: x = d * (q - 8), byte j low nibble = element j, high = j + 16.
// Kernels: on AVX-512 VNNI, when enabled (GgufUsesA8; kGgufA8Default in ggml_quant.cc), the
// codes are multiplied as integers with int8 activations (W4A8 / W8A8,
// ggml_quant_a8_avx512.cc), so the product is defined with quantized activations exactly as
// for the int group formats (quant.h, QuantUsesA8): each token's x is split in 32-column
// blocks, each rounded to int8 with its own scale s = amax/127
// (quant_internal::QuantizeChunksQ8), and y = sum_b d_b * s_b * sum_j q_bj * qx_bj
// (GemmGgufA8Ref), like llama.cpp's own q8_0 activations. Otherwise each 1024-column block of
// up to 4 rows is widened to fp32 in L1 and multiplied with the shared engine of
// kernels/sparse_tile.h (exact fp32 activations). Both are batch invariant.
//
// CPU kernel layout (WeightFormat::layout == kLayoutGgufSplit; made at load by
// UseCpuKernelLayouts, engine/compress/linear.h, never written to files): the same bytes and
// values, split in two arrays so that the A8 kernels of the int group formats run them
// (quant.h), the scales stored after the codes as fp16 d [rows][cols / 32]:
//   Q4_0: data = codes [rows][cols / 2] (each block's 16 code bytes as in the file, which is
//         the 4-bit chunk layout of quant.h, with every full 512-column span in superblock
//         order, PermuteQuant4Superblocks), d at byte rows * cols / 2; run by
//         GemmQuant4A8Avx512 as int4 group 32 with min = -8 d.
//   Q8_0: data = codes [rows][cols] as u8 (q + 128, i.e. q ^ 0x80), d at byte rows * cols;
//         run by GemmQuant8A8Avx512 as int8 group 32 with min = -128 d.
// Needs cols % 64 == 0 (GgufSplitApplies).
#pragma once

#include <cstdint>
#include <string>

#include "kernels/format_ops.h"
#include "kernels/weight_format.h"

namespace compressd::kernels {

struct ActCache;  // kernels/gemm.h

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

inline constexpr uint8_t kLayoutGgufSplit = 2;
// True when f (Q8_0 or Q4_0, file layout) of `cols` columns takes the split layout on this
// CPU: the A8 path runs (GgufUsesA8) and cols % 64 == 0.
bool GgufSplitApplies(const WeightFormat& f, int64_t cols);
// f's blocks [rows][cols / 32] at src -> split layout at dst (same size); src == dst is
// allowed.
void GgufToSplit(const WeightFormat& f, const uint8_t* src, uint8_t* dst, int64_t rows,
                 int64_t cols);

// Table for kQuant variants >= 100 (supports/row_align/gemm/dequantize_rows).
const FormatOps& GgufQuantFormatOps();

// Per-ISA kernels (parity tests, benchmarks).
void GemmGgufAvx512(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                    int64_t row_begin, int64_t row_end);
void GemmGgufAvx2(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                  int64_t row_begin, int64_t row_end);
// W4A8 / W8A8 integer path (see above) and its scalar oracle (double accumulation).
void GemmGgufA8Avx512(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                      int64_t row_begin, int64_t row_end);
void GemmGgufA8Ref(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                   int64_t row_begin, int64_t row_end);
// True when GgufQuantFormatOps().gemm takes the integer path for f on this CPU.
bool GgufUsesA8(const WeightFormat& f);
// The integer path with activations shared through an ActCache (kernels/gemm.h): sizing,
// filling, and the GEMM that uses them when they match x, n and the layout.
void GgufA8ActsReserve(const PackedWeight& w, const float* x, int64_t n, ActCache* c);
void GgufA8ActsFill(int64_t t_begin, int64_t t_end, ActCache* c);
void GemmGgufA8Avx512Acts(const PackedWeight& w, const float* x, int64_t n, float* y,
                          int64_t ldy, int64_t row_begin, int64_t row_end, const ActCache* acts);
// Scalar decode of W[r][k0 .. k0 + len) (k0, len multiples of 32).
void GgufDecodeRef(const PackedWeight& w, int64_t r, int64_t k0, int64_t len, float* out);

}  // namespace compressd::kernels
