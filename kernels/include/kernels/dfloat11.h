// DFloat11-style lossless bf16 weights (WeightKind::kEntropy): in trained bf16 weights the
// 8-bit exponent carries ~2.6 bits of information, so each weight is stored as one raw byte
// (sign + 7 mantissa bits) plus its exponent Huffman-coded: ~11 bits per weight, and decode
// gives back exactly the bf16 bits that were packed (every value: +-0, subnormals, inf, NaN
// payloads).
//
// Sources: bf16 weights are packed bit for bit. fp32 and fp16 weights are first rounded to
// bf16 (round to nearest even, F32ToBF16); the format is lossless with respect to those
// bf16-rounded values, not to the fp32/fp16 originals.
//
// Layout (format: kind = kEntropy, dtype = kBF16, bits = 16, variant = 0; W is [rows][cols]):
//   data : uint8 [rows][cols]: byte = sign << 7 | mantissa (bf16 bit 15 and bits 6..0).
//   aux0 : the exponent bitstream: per row, cols canonical Huffman codes, MSB first within
//          each byte; rows back to back with no alignment; followed by kDf11StreamPad zero
//          bytes (decoders load 8 bytes at a time and may read past a row's last code).
//   aux1 : uint64 [rows + 1]: bit offset in aux0 of each row's first code; the last entry is
//          the end of the stream. Rows are the independently decodable chunks: a thread
//          decodes any row range without touching other rows.
//   aux2 : uint8 [256]: the code length of each exponent value (0 = does not occur), at most
//          kDf11MaxCodeLen. Codes are canonical: sorted by (length, exponent value), so these
//          lengths define the code. A code of one symbol uses length 1.
// Decoding: each GEMM call builds two kDf11MaxCodeLen-bit tables from the 256 lengths (a few
// microseconds): one code per window (tails, validation) and up to 4 whole codes per window
// (the fast path); one 8-byte load of a row's stream feeds 5 lookups, and 4 rows' streams are
// decoded interleaved so their dependency chains overlap.
//
// GEMM: rows are decoded (kDf11RowGroup at a time) into an L1/L2 bf16 tile that is then
// multiplied by the dense bf16 kernel of the active ISA (gemm.h), so Gemm() on a df11 weight
// gives bit for bit what Gemm() gives on the same values stored as dense bf16 (the vdpbf16ps
// path on AVX512_BF16 CPUs, with its bf16-rounded activations), whatever n and the row
// range. Decode is the only df11-specific work, and it bounds the speed on CPUs: about
// 1.5e9 weights/s per core here against the ~14e9 bf16 weights/s a core streams from DRAM
// (tests/kernels/dfloat11_bench.cc), so df11 trades GEMV speed for 30-35% less memory.
// There is no CUDA kernel: the CUDA runner's generic fallback dequantizes to fp16 (lossy).
//
// Thread-safety: pure functions over caller-owned buffers; Df11Packed owns its buffers. The
// GEMM and the fast decoder keep per-thread scratch (thread_local), as the dense bf16 path does.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/weight_format.h"

namespace compressd::kernels {

inline constexpr int kDf11MaxCodeLen = 10;
inline constexpr int64_t kDf11StreamPad = 16;
inline constexpr int64_t kDf11RowGroup = 16;

WeightFormat Df11Format();
bool IsDf11(const WeightFormat& f);

// Owned buffers of one df11 weight (the engine moves them into a Linear).
struct Df11Packed {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<uint8_t> data;     // sign + mantissa bytes
  std::vector<uint8_t> stream;   // aux0
  std::vector<uint8_t> offsets;  // aux1 (uint64 [rows + 1])
  std::vector<uint8_t> lengths;  // aux2 (uint8 [256])
  PackedWeight View() const;
  uint64_t bytes() const { return data.size() + stream.size() + offsets.size() + lengths.size(); }
};

// w: bf16 bits [rows][cols] row-major.
Df11Packed PackDf11(const uint16_t* w, int64_t rows, int64_t cols);
// w: fp32 [rows][cols]; rounded to bf16 (F32ToBF16) and packed.
Df11Packed PackDf11F32(const float* w, int64_t rows, int64_t cols);

// Checks a df11 weight from an untrusted source (a checkpoint on disk): buffer sizes, the
// code lengths (a prefix code of lengths <= kDf11MaxCodeLen), the offsets, and that every row
// decodes to exactly cols codes ending at its offset (a full decode). Returns "" when valid,
// else what is wrong. Decoders read only validated or freshly packed weights.
std::string ValidateDf11(const PackedWeight& w);

// Scalar reference decoder (bit by bit, no table): rows [row_begin, row_end) as bf16 bits
// into out[(r - row_begin) * cols + c]. The definition of the format's values.
void Df11DecodeRowsRef(const PackedWeight& w, int64_t row_begin, int64_t row_end, uint16_t* out);
// Fast decoder (table lookup, several rows' streams interleaved); same output as the reference.
void Df11DecodeRows(const PackedWeight& w, int64_t row_begin, int64_t row_end, uint16_t* out);

// The fused GEMM (contract of Gemm() in gemm.h), and its double-accumulation oracle.
void GemmDf11(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
              int64_t row_begin, int64_t row_end);
void GemmDf11Ref(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                 int64_t row_begin, int64_t row_end);

// Shannon entropy (bits) of the exponent byte over a bf16 tensor, and the coded bits per
// weight of a packed weight (all buffers): for reports and tests.
double Df11ExponentEntropy(const uint16_t* w, int64_t count);
inline double Df11BitsPerWeight(const Df11Packed& p) {
  return p.rows * p.cols > 0 ? 8.0 * static_cast<double>(p.bytes()) / (p.rows * p.cols) : 0.0;
}

}  // namespace compressd::kernels
