// Per-family operations of packed weight formats. Gemm()/DequantizeRows()/GemmSupports()
// dispatch on WeightFormat::kind to one of these tables, each defined in its own file:
//   kQuant, kComposite -> QuantFormatOps()   (kernels/cpu/quant_ops.cc)
//   kSparse            -> SparseFormatOps()  (kernels/cpu/sparse_ops.cc)
//   kEntropy           -> Df11FormatOps()    (kernels/cpu/dfloat11.cc)
// kDense is handled in gemm.cc; kLowRank is two GEMMs chained by the engine (Linear::first).
#pragma once

#include <cstdint>

#include "kernels/weight_format.h"

namespace compressd::kernels {

struct FormatOps {
  bool (*supports)(const WeightFormat& f);
  int64_t (*row_align)(const WeightFormat& f);
  // Fast path (dispatches on ActiveIsa() itself).
  void (*gemm)(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
               int64_t row_begin, int64_t row_end);
  // Scalar definition of the format's values: rows [row_begin,row_end) as fp32.
  void (*dequantize_rows)(const PackedWeight& w, int64_t row_begin, int64_t row_end, float* out);
};

const FormatOps& QuantFormatOps();
const FormatOps& SparseFormatOps();
const FormatOps& Df11FormatOps();

}  // namespace compressd::kernels
