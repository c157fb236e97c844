// Quant weight formats: not implemented yet; GemmSupports() reports false for them.
#include "kernels/format_ops.h"

namespace compressd::kernels {
namespace {
bool Supports(const WeightFormat&) { return false; }
int64_t RowAlign(const WeightFormat&) { return 1; }
void Gemm(const PackedWeight&, const float*, int64_t, float*, int64_t, int64_t, int64_t) {}
void Dequant(const PackedWeight&, int64_t, int64_t, float*) {}
}  // namespace

const FormatOps& QuantFormatOps() {
  static const FormatOps ops = {Supports, RowAlign, Gemm, Dequant};
  return ops;
}

}  // namespace compressd::kernels
