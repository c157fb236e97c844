// Low-rank factorisation of a linear layer: W [rows x cols] ~= U [rows x rank] * V [rank x cols],
// run as two GEMMs (Linear::first = V, Linear::w = U; LinearForward chains them).
// The rank comes from `rank`, else from an energy threshold on the squared singular values,
// else from a target parameter ratio rank*(rows+cols) <= ratio*rows*cols (LoRD-style).
// With stats and `weighted`, the SVD is importance-weighted (FWSVD/ASVD style): columns are
// scaled by sqrt(diag(X^T X)/n) before the factorisation and V is unscaled afterwards, which
// minimises the error on the outputs the calibration inputs produce rather than on W.
// The SVD is our own (Jacobi eigen-decomposition of the smaller Gram matrix, in double).
// Pure function; any thread.
#pragma once

#include <vector>

#include "engine/compress/calibration.h"
#include "engine/compress/linear.h"

namespace compressd {

struct LowRankParams {
  double energy = 0;   // keep the smallest rank with this fraction of sum sigma^2 (0 = off)
  double ratio = 0.5;  // else: factor parameters <= ratio * rows * cols
  int rank = 0;        // explicit rank (overrides energy and ratio)
  bool weighted = false;
  int factor_bits = 0;  // 0 = bf16 factors; 8 / 4 = int group-quantized factors (group 64)
};

absl::StatusOr<Linear> CompressLowRank(const TensorView& w, const LowRankParams& p,
                                       const ActivationStats* stats);

// Symmetric eigen-decomposition by cyclic Jacobi rotations (double): a is m x m row-major
// (destroyed). Returns eigenvalues in descending order; vecs[m x m] holds the matching
// eigenvectors as columns. Exposed for tests.
std::vector<double> SymmetricEigen(std::vector<double> a, int64_t m, std::vector<double>* vecs);

}  // namespace compressd
