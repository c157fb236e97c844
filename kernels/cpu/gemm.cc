// Format dispatch for Gemm(). Each weight family's kernels live in their own files.
#include "kernels/gemm.h"

#include "kernels/cpu_features.h"
#include "kernels/format_ops.h"

namespace compressd::kernels {
namespace {

const FormatOps* OpsFor(WeightKind kind) {
  switch (kind) {
    case WeightKind::kQuant:
    case WeightKind::kComposite:
      return &QuantFormatOps();
    case WeightKind::kSparse:
      return &SparseFormatOps();
    case WeightKind::kEntropy:
      return &Df11FormatOps();
    default:
      return nullptr;
  }
}

}  // namespace

bool GemmSupports(const WeightFormat& f) {
  if (f.kind == WeightKind::kDense) {
    return f.dtype == DType::kF32 || f.dtype == DType::kF16 || f.dtype == DType::kBF16;
  }
  const FormatOps* ops = OpsFor(f.kind);
  return ops != nullptr && ops->supports(f);
}

int64_t GemmRowAlign(const WeightFormat& f) {
  const FormatOps* ops = OpsFor(f.kind);
  return ops != nullptr ? ops->row_align(f) : 1;
}

void Gemm(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
          int64_t row_begin, int64_t row_end) {
  if (w.format.kind == WeightKind::kDense) {
    switch (ActiveIsa()) {
      case CpuIsa::kAvx512: return GemmDenseAvx512(w, x, n, y, ldy, row_begin, row_end);
      case CpuIsa::kAvx2: return GemmDenseAvx2(w, x, n, y, ldy, row_begin, row_end);
      case CpuIsa::kScalar: return GemmDenseRef(w, x, n, y, ldy, row_begin, row_end);
    }
    return;
  }
  const FormatOps* ops = OpsFor(w.format.kind);
  if (ops != nullptr) return ops->gemm(w, x, n, y, ldy, row_begin, row_end);
  GemmRef(w, x, n, y, ldy, row_begin, row_end);
}

}  // namespace compressd::kernels
