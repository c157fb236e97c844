// Scalar references: the definition of every format's values and the oracle for tests.
#include <vector>

#include "kernels/format_ops.h"
#include "kernels/gemm.h"

namespace compressd::kernels {
namespace {

float DenseAt(const PackedWeight& w, int64_t r, int64_t c) {
  const size_t i = static_cast<size_t>(r) * w.cols + c;
  switch (w.format.dtype) {
    case DType::kF32: return static_cast<const float*>(w.data)[i];
    case DType::kF16: return F16ToF32(static_cast<const uint16_t*>(w.data)[i]);
    case DType::kBF16: return BF16ToF32(static_cast<const uint16_t*>(w.data)[i]);
    default: return 0.0f;
  }
}

}  // namespace

void DequantizeRows(const PackedWeight& w, int64_t row_begin, int64_t row_end, float* out) {
  switch (w.format.kind) {
    case WeightKind::kDense:
      for (int64_t r = row_begin; r < row_end; ++r) {
        for (int64_t c = 0; c < w.cols; ++c) out[(r - row_begin) * w.cols + c] = DenseAt(w, r, c);
      }
      return;
    case WeightKind::kQuant:
    case WeightKind::kComposite:
      return QuantFormatOps().dequantize_rows(w, row_begin, row_end, out);
    case WeightKind::kSparse:
      return SparseFormatOps().dequantize_rows(w, row_begin, row_end, out);
    default:
      return;
  }
}

void GemmDenseRef(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                  int64_t row_begin, int64_t row_end) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    for (int64_t t = 0; t < n; ++t) {
      double acc = 0.0;
      const float* xt = x + t * w.cols;
      for (int64_t c = 0; c < w.cols; ++c) acc += static_cast<double>(DenseAt(w, r, c)) * xt[c];
      y[t * ldy + r] = static_cast<float>(acc);
    }
  }
}

void GemmRef(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
             int64_t row_begin, int64_t row_end) {
  std::vector<float> row(static_cast<size_t>(w.cols));
  for (int64_t r = row_begin; r < row_end; ++r) {
    DequantizeRows(w, r, r + 1, row.data());
    for (int64_t t = 0; t < n; ++t) {
      double acc = 0.0;
      const float* xt = x + t * w.cols;
      for (int64_t c = 0; c < w.cols; ++c) acc += static_cast<double>(row[c]) * xt[c];
      y[t * ldy + r] = static_cast<float>(acc);
    }
  }
}

}  // namespace compressd::kernels
