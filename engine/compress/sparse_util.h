// Helpers shared by the sparse, low-rank and checkpoint code of engine/compress.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/compress/linear.h"
#include "kernels/sparse.h"

namespace compressd {

// fp32 values of a [rows][cols] weight: plain F32/F16/BF16 or GGUF Q8_0/Q4_0 storage.
absl::StatusOr<std::vector<float>> WeightValuesF32(const TensorView& t);

// A Linear owning `buffers` ([0] = data, [1..4] = aux0..3; empty = absent).
Linear LinearFromBuffers(const kernels::WeightFormat& f, int64_t rows, int64_t cols,
                         std::vector<std::vector<uint8_t>> buffers, std::string format_name);

// A Linear owning a sparse packed weight.
Linear LinearFromSparse(kernels::SparsePacked p);

// A GGUF Q8_0/Q4_0 tensor as a Linear reading its blocks in place (zero copy), or, with
// `copy`, from a copy it owns; the checkpoint's pages are then released (MmapFile::
// ReleasePages), so resident memory holds the blocks once. Serving copies: decode reads
// anonymous memory faster than the file's page-cache pages (Llama-3.2-1B Q4_0 GGUF: 37-42 ->
// 47-50 tok/s, docs/BENCHMARKS.md session 9).
absl::StatusOr<Linear> MakeGgufLinear(const TensorView& t, bool copy = false);

}  // namespace compressd
