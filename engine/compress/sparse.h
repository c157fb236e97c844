// Pruning a linear layer to a sparse format (kernels/sparse.h): unstructured (magnitude or
// Wanda |w| * ||x||), 2:4 semi-structured, and GQSA-style group sparsity (whole groups of 16
// columns per row, survivors int4 or fp16). Importance is compared within each output row
// (Wanda's per-output comparison group). Pure function of its inputs; any thread.
#pragma once

#include "engine/compress/calibration.h"
#include "engine/compress/linear.h"

namespace compressd {

struct SparseParams {
  enum class Kind { kUnstructured, kTwoFour, kGroup } kind = Kind::kUnstructured;
  double sparsity = 0.5;         // fraction of weights (kGroup: groups) removed per row
  bool activation_aware = true;  // Wanda: importance |w| * ||x|| when stats are given
  int group_size = 16;           // kGroup: must be 16
  int bits = 16;                 // 16 = fp16 values; 4 = GQSA-style int4 (kGroup only)
};

// w: [rows][cols] plain F32/F16/BF16 (or GGUF block) tensor. stats (may be null) are the
// input statistics of this linear. INVALID_ARGUMENT naming the tensor for bad parameters.
absl::StatusOr<Linear> CompressSparse(const TensorView& w, const SparseParams& p,
                                      const ActivationStats* stats);

}  // namespace compressd
