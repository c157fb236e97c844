// Quantized weight formats (WeightKind::kQuant / kComposite): block layouts, pack functions,
// and the per-ISA fused dequantize-and-multiply kernels.
//
// Every format stores a row's codes in 32-value chunks, with cols padded with zeros to a
// multiple of QuantColPad(format) (64, or the group size when larger). Chunk layouts are
// chosen so that one load plus shifts/masks yields 16 consecutive values per zmm:
//   4-bit: 16 bytes; byte j holds value j (low nibble) and value j+16 (high nibble).
//   2-bit: 8 bytes; byte j holds values j, j+8, j+16, j+24 in bit pairs 0,2,4,6.
//   3-bit: the 2-bit chunk (low two bits) + a 32-bit plane (bit j = bit 2 of value j).
//   8-bit (group, asymmetric): 32 unsigned bytes in order.
// Group formats decode w = code * scale + min per group (asymmetric, min = -zero*scale).
//
// WeightFormat::variant selects the layout (QuantVariant). Buffers per variant:
//   kGroup   : data = codes [rows][row_bytes]; aux[0] = GroupScale [rows][n_groups].
//   kInt8Row : data = int8 [rows][cols_pad]; aux[0] = fp32 scale [rows];
//              aux[1] = int32 sum of the row's codes [rows] (for the W8A8 u8 offset).
//   kW8A8    : as kInt8Row; activations quantized per token to int8 (VNNI dot products).
//   kLlmInt8 : as kW8A8, plus aux[2] = uint32 outlier column ids [n_out] (sorted) and
//              aux[3] = fp16 [rows][n_out] outlier weights. Outlier columns are zero in the
//              int8 codes and excluded from the activation scale (LLM.int8 decomposition).
//   kSpqr    : data = codes (bits 3/4, group 16); aux[0] = SpqrRowStats [rows];
//              aux[1] = uint8 [rows][n_groups][2] (scale code, min code);
//              aux[2] = uint32 CSR row_ptr [rows+1]; aux[3] = SpqrOutlier [nnz]
//              (fp16 residuals added to the dequantized base).
//   kMixed   : per-row bits (8 or 4): data = codes of all rows back to back;
//              aux[0] = GroupScale [rows][n_groups]; aux[1] = uint64 row byte offsets
//              [rows+1]; aux[2] = uint8 bits [rows].
// Kernels only read these buffers; PackedQuant owns them when produced by a pack function.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/weight_format.h"

namespace compressd::kernels {
struct ActCache;  // kernels/gemm.h
}  // namespace compressd::kernels

namespace compressd::kernels {

enum class QuantVariant : uint32_t {
  kGroup = 0,
  kInt8Row = 1,
  kW8A8 = 2,
  kLlmInt8 = 3,
  kSpqr = 4,
  kMixed = 5,
};

struct GroupScale {
  uint16_t d;  // fp16 scale
  uint16_t m;  // fp16 min (value of code 0)
};
static_assert(sizeof(GroupScale) == 4, "GroupScale is 2 x fp16");

struct Q4Chunk {
  uint8_t qs[16];
};
static_assert(sizeof(Q4Chunk) == 16, "32 x 4-bit");
struct Q2Chunk {
  uint8_t qs[8];
};
static_assert(sizeof(Q2Chunk) == 8, "32 x 2-bit");
struct Q3Chunk {
  uint8_t lo[8];  // low two bits, Q2Chunk layout
  uint32_t hi;    // bit j = bit 2 of value j
};
static_assert(sizeof(Q3Chunk) == 12, "32 x 3-bit");
struct Q8Chunk {
  uint8_t qs[32];
};
static_assert(sizeof(Q8Chunk) == 32, "32 x 8-bit");

// SpQR second-level statistics: scale = s0 + code * ds, min = m0 + code * dm (fp16 each).
struct SpqrRowStats {
  uint16_t s0, ds, m0, dm;
};
static_assert(sizeof(SpqrRowStats) == 8, "4 x fp16");

struct SpqrOutlier {
  uint16_t col;
  uint16_t val;  // fp16 residual
};
static_assert(sizeof(SpqrOutlier) == 4, "col + fp16");

constexpr int kQuantChunk = 32;

inline int64_t ChunkBytes(int bits) {
  switch (bits) {
    case 2: return 8;
    case 3: return 12;
    case 4: return 16;
    case 8: return 32;
    default: return 0;
  }
}

// Column padding of a format: rows are stored as cols_pad values.
int64_t QuantColPad(const WeightFormat& f);
inline int64_t QuantPaddedCols(const WeightFormat& f, int64_t cols) {
  const int64_t p = QuantColPad(f);
  return (cols + p - 1) / p * p;
}
// Group length of a format's scales (kInt8Row/W8A8/LlmInt8: the whole padded row).
int64_t QuantGroupLen(const WeightFormat& f, int64_t cols);

// Format constructors.
WeightFormat GroupFormat(int bits, int group_size);  // bits 2,3,4,8
WeightFormat Int8RowFormat(bool w8a8);
WeightFormat LlmInt8Format();
WeightFormat SpqrFormat(int bits);  // group 16
WeightFormat MixedFormat(int group_size);

// Owned buffers of a packed weight plus the view into them.
struct PackedQuant {
  PackedWeight view;
  std::vector<std::vector<uint8_t>> buffers;  // [0] = data, [1..] = aux
  void Bind();  // points view.data/aux at buffers
  uint64_t bytes() const;
};

// --- pack functions (w is fp32 [rows][cols] row-major) ---

// Group-wise asymmetric round-to-nearest with a per-group grid search of the clipping range
// (minimises the group's squared error, weighted by col_weight[c] when given).
PackedQuant PackGroup(const float* w, int64_t rows, int64_t cols, int bits, int group_size,
                      const float* col_weight = nullptr);
// Same, but from already chosen codes and per-group scale/min (GPTQ/QuantEase).
// codes [rows][cols] in [0, 2^bits), scale/min [rows][n_groups] (fp32, rounded to fp16 here).
PackedQuant PackGroupCodes(const uint8_t* codes, const float* scale, const float* min,
                           int64_t rows, int64_t cols, int bits, int group_size);
// Rounds a (scale, min) pair to what PackGroupCodes stores (fp16), so that a calibrated
// quantizer can quantize against the exact stored grid.
void RoundGroupParams(float* scale, float* min);

PackedQuant PackInt8Rows(const float* w, int64_t rows, int64_t cols, bool w8a8);
// outlier_cols: input columns kept in fp16 (any order; duplicates ignored).
PackedQuant PackLlmInt8(const float* w, int64_t rows, int64_t cols,
                        const std::vector<uint32_t>& outlier_cols);
// SpQR: bits 3/4, group 16, 8-bit scale/min codes; the outlier_frac of weights with the
// largest (col_weight-weighted) quantization error are stored as fp16 residuals.
PackedQuant PackSpqr(const float* w, int64_t rows, int64_t cols, int bits, float outlier_frac,
                     const float* col_weight = nullptr);
// MixLLM-style: row_bits[r] in {4, 8}, group-wise asymmetric codes.
PackedQuant PackMixed(const float* w, int64_t rows, int64_t cols,
                      const std::vector<uint8_t>& row_bits, int group_size,
                      const float* col_weight = nullptr);

// Human-readable name ("int4-g128", "w8a8", "spqr3", ...).
std::string QuantFormatName(const WeightFormat& f);

// --- kernels (same contract as Gemm() in gemm.h) ---
void GemmQuantRef(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                  int64_t row_begin, int64_t row_end);
void GemmQuantAvx2(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                   int64_t row_begin, int64_t row_end);
void GemmQuantAvx512(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                     int64_t row_begin, int64_t row_end);
bool QuantSupports(const WeightFormat& f);

// A8 paths (W4A8, W8A8-chunk): on AVX-512 VNNI, group formats (kGroup, bits 2, 3, 4 or 8,
// group size >= 32) multiply the codes with int8 activations (vpdpbusd), so
// their product is defined with quantized activations (GemmQuant8A8Avx512 also computes
// per-row int8 this way when called directly, but Gemm() runs kInt8Row through the A16 path
// below: see QuantUsesA8): each token's x is split in 32-column chunks (the code
// chunks) and each chunk is rounded to int8 with its own scale s = amax/127 (q =
// round-half-even(x * 127/amax), x^ = q * s). Then y = sum_c w_c x^_c, with w_c exactly as
// DequantizeRows defines it (code * scale + min per group; code * row scale for kInt8Row).
// |y - (exact y)| <= sum_c |w_c| s_chunk(c) / 2. (kW8A8/kLlmInt8 keep their own per-token
// definition, GemmQuantRef.)
// True when Gemm() takes an A8 path for f on this CPU (AVX-512 + VNNI, not capped below).
bool QuantUsesA8(const WeightFormat& f);
// Scalar definition of the A8 product (the oracle of GemmQuant4A8Avx512 and
// GemmQuant8A8Avx512), in double, for any format that DequantizeRows handles.
void GemmQuantA8Ref(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                    int64_t row_begin, int64_t row_end);
// 4-bit group codes (quant_gemm_a8_avx512.cc).
void GemmQuant4A8Avx512(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                        int64_t row_begin, int64_t row_end);
// The same with `acts`: activations prepared by ActCacheReserve/ActCacheFill (used when they
// match x, n and the layout; otherwise quantized here), or nullptr.
void GemmQuant4A8Avx512Acts(const PackedWeight& w, const float* x, int64_t n, float* y,
                            int64_t ldy, int64_t row_begin, int64_t row_end,
                            const ActCache* acts);
// True when Gemm() runs w through GemmQuant4A8Avx512 on this CPU.
bool GemmUsesQuant4A8(const WeightFormat& f);
// Superblock code order for GemmQuant4A8Avx512 (WeightFormat::layout): in every row, each
// full 512-column span (16 chunks, 256 bytes) is stored as a 4 x 16 matrix of 32-bit words
// instead of 16 x 4: word k of chunk l moves from byte 16 l + 4 k to byte 64 k + 4 l, so one
// 64-byte load holds word k of all 16 chunks and vpdpbusd sums a whole chunk per lane. Row
// sizes, offsets and scales are unchanged; columns after the last full span keep the
// canonical order. Only 4-bit kGroup weights run by the W4A8 kernel take it
// (Quant4UsesSuperblocks), and the codes of GGUF Q4_0's split layout (ggml_quant.h);
// DequantizeQuantRows reads both orders, and Gemm() runs any
// other path on such a weight through the scalar reference.
constexpr uint8_t kLayoutA8Superblock = 1;
constexpr int64_t kA8Superblock = 512;  // columns per span
bool Quant4UsesSuperblocks(const WeightFormat& f);
// Rewrites rows [row_begin, row_end) of codes (kGroup, 4-bit, canonical order, cols_pad
// columns per row) from `src` to `dst` in superblock order (to_superblocks) or back.
// src == dst is allowed.
void PermuteQuant4Superblocks(const uint8_t* src, uint8_t* dst, int64_t row_begin,
                              int64_t row_end, int64_t cols_pad, bool to_superblocks);
// ActCache layout of GemmQuant4A8Avx512 (gemm.h): sizing and filling.
void Quant4A8ActsReserve(const PackedWeight& w, const float* x, int64_t n, ActCache* c);
void Quant4A8ActsFill(int64_t t_begin, int64_t t_end, ActCache* c);
// A16 path (W8A16): on AVX-512 VNNI, per-row int8 (kInt8Row, the `int8` preset) multiplies
// its s8 codes with int16 activations (vpdpwssd). Each token's x is split in kA16Block-column
// blocks, each rounded with its own scale s = amax/32767 (q = round-half-even(x * 32767/amax)
// clamped to +-32767, x^ = q * s); y = row_scale * sum_c code_c x^_c. The activation rounding
// adds at most sum_c |w_c| s_block(c) / 2, ~256x less than int8 activations.
constexpr int64_t kA16Block = 256;
// True when Gemm() takes the A16 path for f on this CPU (AVX-512 + VNNI, not capped below).
bool QuantUsesA16(const WeightFormat& f);
// Scalar definition of the A16 product (oracle of GemmQuant8A16Avx512), in double.
void GemmQuant8A16Ref(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                      int64_t row_begin, int64_t row_end);
void GemmQuant8A16Avx512(const PackedWeight& w, const float* x, int64_t n, float* y,
                         int64_t ldy, int64_t row_begin, int64_t row_end);
// The same with `acts` prepared by ActCacheReserve/ActCacheFill (used when they match x, n
// and the padded width; otherwise quantized here), or nullptr.
void GemmQuant8A16Avx512Acts(const PackedWeight& w, const float* x, int64_t n, float* y,
                             int64_t ldy, int64_t row_begin, int64_t row_end,
                             const ActCache* acts);
// ActCache layout of GemmQuant8A16Avx512 (gemm.h): sizing and filling.
void Quant8A16ActsReserve(const PackedWeight& w, const float* x, int64_t n, ActCache* c);
void Quant8A16ActsFill(int64_t t_begin, int64_t t_end, ActCache* c);
// 8-, 3- and 2-bit group codes and kInt8Row (s8) (quant_gemm_8a8_avx512.cc).
void GemmQuant8A8Avx512(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                        int64_t row_begin, int64_t row_end);
// The same with `acts` (group formats; as GemmQuant4A8Avx512Acts), or nullptr.
void GemmQuant8A8Avx512Acts(const PackedWeight& w, const float* x, int64_t n, float* y,
                            int64_t ldy, int64_t row_begin, int64_t row_end,
                            const ActCache* acts);
// True when Gemm() runs w through GemmQuant8A8Avx512 on this CPU (8-, 3-, 2-bit groups).
bool GemmUsesQuant8A8(const WeightFormat& f);
// ActCache layout of GemmQuant8A8Avx512 for group formats: sizing and filling.
void Quant8A8ActsReserve(const PackedWeight& w, const float* x, int64_t n, ActCache* c);
void Quant8A8ActsFill(int64_t t_begin, int64_t t_end, ActCache* c);
void DequantizeQuantRows(const PackedWeight& w, int64_t row_begin, int64_t row_end, float* out);

// Shared helpers for the kernels (quant_common.cc).
namespace quant_internal {
// Unpacks one 32-value chunk of `bits` into codes[32].
void UnpackChunk(const uint8_t* chunk, int bits, uint8_t* codes);
// Per-row decoded group parameters (fp32) and the row's code pointer and bits.
struct RowView {
  const uint8_t* codes;
  int bits;
};
RowView RowCodes(const PackedWeight& w, int64_t r);
// Fills scale/min [n_groups] of row r (group formats: kGroup, kSpqr, kMixed).
void RowGroupParams(const PackedWeight& w, int64_t r, float* scale, float* min);
// Adds SpQR outliers / LLM.int8 outlier columns of row r to y for n tokens (x [n][cols]).
void AddRowCorrections(const PackedWeight& w, int64_t r, const float* x, int64_t ldx, int64_t n,
                       float* y, int64_t ldy);
// Per-token int8 quantization of activations for W8A8/LLM.int8: xq [n][cols_pad] (u8 =
// int8 + 128, padding 128), xscale [n]. Outlier columns (sorted ids) are treated as zero.
void QuantizeActivations(const float* x, int64_t n, int64_t cols, int64_t cols_pad,
                         const uint32_t* outliers, int64_t n_out, uint8_t* xq, float* xscale);
// A8 activations of one token: x [cols] -> q [cols_pad] int8 and scale [cols_pad / 32],
// one scale per 32-column chunk (columns past cols are zero). See QuantUsesA8().
void QuantizeChunksQ8(const float* x, int64_t cols, int64_t cols_pad, int8_t* q, float* scale);
}  // namespace quant_internal

}  // namespace compressd::kernels
