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

// A GGUF Q8_0/Q4_0 tensor as a Linear reading its blocks in place (zero copy; the loader
// then copies them, OwnMappedBuffers in linear.h, unless LoadOptions::mmap_weights).
absl::StatusOr<Linear> MakeGgufLinear(const TensorView& t);

}  // namespace compressd
