// Sparse weight formats (WeightKind::kSparse): layouts, pack functions and validation.
//
// Every sparse format is read by the same fused kernel shape (Flash-LLM's "load sparse,
// compute dense"): a block of kSparseBlockCols columns of up to 4 rows is expanded into a
// dense fp32 tile in L1 (AVX-512 vexpandps from the packed values under the bitmap), then
// multiplied by the activations with FMAs exactly as the dense kernel does. The order of
// the floating-point operations for one (output row, token) depends only on the format and
// cols, never on n or the row range, so results are batch invariant.
//
// Layouts (W is [rows][cols]; nblk = ceil(cols / kSparseBlockCols)):
//
// kUnstructured (format.sparsity = kUnstructured, dtype = kF16, bits = 16, variant 0)
//   data : fp16 values of the kept weights, row after row, column order; followed by
//          kSparsePadHalves zero halves (vector loads may read past the last value).
//   aux0 : uint64 bitmap [rows][ceil(cols / 64)]; bit c%64 of word c/64 = W[r][c] kept.
//          Bits at c >= cols are 0.
//   aux1 : uint32 offsets [rows][nblk + 1]: index in data (in values) of the first kept
//          value of each column block of the row; entry nblk is the end of the row.
//
// kTwoFour (sparsity = kTwoFour, dtype = kF16, bits = 16, variant 0)
//   cols are padded to cp = round_up(cols, 16) with zeros. Each group of 4 columns keeps 2.
//   data : fp16 values [rows][cp / 2]: the two kept values of each group, lower column first.
//   aux0 : uint16 indices [rows][cp / 16]: bits 4g..4g+3 of a word describe group g (of 4)
//          of that 16-column piece: i0 | i1 << 2 with i0 < i1 the kept positions (0..3).
//
// kGroup (GQSA-style; sparsity = kGroup, group_size = 16, bits = 4 or 16, variant 0)
//   Whole groups of 16 columns of a row are pruned; ng = ceil(cols / 16) groups per row
//   (the last group is zero-padded).
//   aux0 : uint64 group bitmap [rows][ceil(ng / 64)]; bit g%64 of word g/64 = group kept.
//   aux1 : uint32 offsets [rows][nblk + 1]: index (in kept groups) of the first kept group
//          of each column block (kSparseBlockCols = 64 groups) of the row; last = row end.
//   bits = 4  : data = 8 bytes per kept group: byte j holds column 2j (low nibble) and
//               2j+1 (high nibble), code q in [0,15], value = scale * (q - 8);
//               aux2 = fp16 scale per kept group (same order).
//   bits = 16 : data = 16 fp16 values per kept group; aux2 unused.
//   data is followed by 64 zero bytes of padding.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/weight_format.h"

namespace compressd::kernels {

inline constexpr int64_t kSparseBlockCols = 1024;
inline constexpr int64_t kSparsePadHalves = 32;
inline constexpr int32_t kSparseGroupCols = 16;

// Owned packed bytes of one sparse weight (the engine moves these into a Linear).
struct SparsePacked {
  WeightFormat format;
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<uint8_t> data;
  std::vector<uint8_t> aux[4];
  PackedWeight View() const;
};

// keep[r * cols + c] != 0 keeps W[r][c]. Values are rounded to fp16.
SparsePacked PackSparseUnstructured(const float* w, const uint8_t* keep, int64_t rows,
                                    int64_t cols);
// keep must mark at most 2 columns of each aligned group of 4 (exactly 2 are stored; when
// fewer are marked the remaining slots hold zeros).
SparsePacked PackSparseTwoFour(const float* w, const uint8_t* keep, int64_t rows, int64_t cols);
// keep_group[r * ng + g] != 0 keeps group g (16 columns) of row r. bits = 4 or 16.
SparsePacked PackSparseGroup(const float* w, const uint8_t* keep_group, int64_t rows,
                             int64_t cols, int bits);

// Checks buffer sizes and internal consistency (offsets vs bitmaps) of a sparse weight from
// an untrusted source. Returns "" when valid, else what is wrong.
std::string ValidateSparse(const PackedWeight& w);

// Human-readable name: "sparse-f16", "2:4-f16", "gqsa-g16-int4".
std::string SparseFormatName(const WeightFormat& f);

// Scalar decode of columns [k0, k0 + len) of row r into out[len] (the reference; also the
// decode step of the AVX2 path). k0 must be a multiple of kSparseBlockCols.
void SparseDecodeRef(const PackedWeight& w, int64_t r, int64_t k0, int64_t len, float* out);

// Per-ISA fused kernels (exposed for parity tests and benchmarks).
void GemmSparseAvx512(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                      int64_t row_begin, int64_t row_end);
void GemmSparseAvx2(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                    int64_t row_begin, int64_t row_end);

}  // namespace compressd::kernels
