// Scalar references: the definition of every format's values and the oracle for tests.
#include <cmath>
#include <vector>

#include "kernels/cpu_features.h"

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
    case WeightKind::kEntropy:
      return Df11FormatOps().dequantize_rows(w, row_begin, row_end, out);
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

bool GemmDenseUsesBf16Dot(const WeightFormat& f) {
  return f.kind == WeightKind::kDense && f.dtype == DType::kBF16 &&
         ActiveIsa() == CpuIsa::kAvx512 && GetCpuFeatures().avx512bf16;
}

void GemmDenseBf16DotRef(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                         int64_t row_begin, int64_t row_end) {
  // vdpbf16ps treats subnormal inputs (weights and rounded activations) as zero.
  auto flush = [](float v) { return std::fpclassify(v) == FP_SUBNORMAL ? 0.0f : v; };
  std::vector<float> xb(static_cast<size_t>(n * w.cols));
  for (size_t i = 0; i < xb.size(); ++i) xb[i] = flush(BF16ToF32(F32ToBF16(x[i])));
  const auto* wd = static_cast<const uint16_t*>(w.data);
  for (int64_t r = row_begin; r < row_end; ++r) {
    for (int64_t t = 0; t < n; ++t) {
      double acc = 0.0;
      for (int64_t c = 0; c < w.cols; ++c) {
        acc += static_cast<double>(flush(BF16ToF32(wd[r * w.cols + c]))) * xb[t * w.cols + c];
      }
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
