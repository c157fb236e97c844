// AVX-512 dense GEMM entry. Until the tuned kernel lands it runs the AVX2 loop.
#include "kernels/gemm.h"

namespace compressd::kernels {

void GemmDenseAvx512(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                     int64_t row_begin, int64_t row_end) {
  GemmDenseAvx2(w, x, n, y, ldy, row_begin, row_end);
}

}  // namespace compressd::kernels
