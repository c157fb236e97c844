// Format dispatch for Gemm(). Each weight kind's kernels live in their own files.
#include "kernels/gemm.h"

#include "kernels/cpu_features.h"

namespace compressd::kernels {

bool GemmSupports(const WeightFormat& f) {
  switch (f.kind) {
    case WeightKind::kDense:
      return f.dtype == DType::kF32 || f.dtype == DType::kF16 || f.dtype == DType::kBF16;
    default:
      return false;
  }
}

int64_t GemmRowAlign(const WeightFormat& f) { return 1; }

void Gemm(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
          int64_t row_begin, int64_t row_end) {
  switch (w.format.kind) {
    case WeightKind::kDense:
      switch (ActiveIsa()) {
        case CpuIsa::kAvx512: return GemmDenseAvx512(w, x, n, y, ldy, row_begin, row_end);
        case CpuIsa::kAvx2: return GemmDenseAvx2(w, x, n, y, ldy, row_begin, row_end);
        case CpuIsa::kScalar: return GemmDenseRef(w, x, n, y, ldy, row_begin, row_end);
      }
      return;
    default:
      return GemmRef(w, x, n, y, ldy, row_begin, row_end);
  }
}

}  // namespace compressd::kernels
