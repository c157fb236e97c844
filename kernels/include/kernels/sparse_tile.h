// The "decode a block, multiply dense" GEMM engine shared by the sparse formats and the GGUF
// block formats (ggml_quant.h). A format supplies a block decoder; the engine runs
//   for each column block k0 (kSparseBlockCols columns):
//     for each token block (64 tokens), for each group of up to 4 rows:
//       decode the rows' block into an fp32 tile (L1), then FMA it against 1..4 tokens.
// Per (row, token) the arithmetic is: 16-lane (AVX-512) / 8-lane (AVX2) FMA accumulation over
// the block in column order, one fixed horizontal reduction, then y = block 0 sum + block 1
// sum + ... in order. None of it depends on n or on the row range: batch invariant.
// This header has the AVX2 engine (scalar block decoders); the AVX-512 engine, with decoders
// in registers, is kernels/sparse_tile_avx512.h.
#pragma once

#include <cstdint>

#include "kernels/weight_format.h"

namespace compressd::kernels {

// Writes W[r][k0 .. k0+len) as fp32 into out. k0 is a multiple of kSparseBlockCols.
using BlockDecodeFn = void (*)(const PackedWeight& w, int64_t r, int64_t k0, int64_t len,
                               float* out);

void DecodedGemmAvx2(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                     int64_t row_begin, int64_t row_end, BlockDecodeFn decode);

}  // namespace compressd::kernels
