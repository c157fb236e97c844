// FormatOps of WeightKind::kSparse (layouts in kernels/sparse.h): dispatch by ISA, and the
// scalar dequantize reference.
#include "kernels/cpu_features.h"
#include "kernels/format_ops.h"
#include "kernels/gemm.h"
#include "kernels/sparse.h"

namespace compressd::kernels {
namespace {

bool Supports(const WeightFormat& f) {
  if (f.kind != WeightKind::kSparse || f.variant != 0) return false;
  switch (f.sparsity) {
    case SparsityPattern::kUnstructured:
    case SparsityPattern::kTwoFour:
      return f.dtype == DType::kF16 && f.bits == 16;
    case SparsityPattern::kGroup:
      return f.group_size == kSparseGroupCols && (f.bits == 4 || f.bits == 16);
    default:
      return false;
  }
}

int64_t RowAlign(const WeightFormat&) { return 1; }

void FormatGemm(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
          int64_t row_begin, int64_t row_end) {
  switch (ActiveIsa()) {
    case CpuIsa::kAvx512: return GemmSparseAvx512(w, x, n, y, ldy, row_begin, row_end);
    case CpuIsa::kAvx2: return GemmSparseAvx2(w, x, n, y, ldy, row_begin, row_end);
    case CpuIsa::kScalar: return GemmRef(w, x, n, y, ldy, row_begin, row_end);
  }
}

void Dequant(const PackedWeight& w, int64_t row_begin, int64_t row_end, float* out) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    for (int64_t k0 = 0; k0 < w.cols; k0 += kSparseBlockCols) {
      const int64_t len = w.cols - k0 < kSparseBlockCols ? w.cols - k0 : kSparseBlockCols;
      SparseDecodeRef(w, r, k0, len, out + (r - row_begin) * w.cols + k0);
    }
  }
}

}  // namespace

const FormatOps& SparseFormatOps() {
  static const FormatOps ops = {Supports, RowAlign, FormatGemm, Dequant};
  return ops;
}

}  // namespace compressd::kernels
