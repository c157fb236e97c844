// AVX2 path of the sparse formats: the scalar block decoder into an L1 tile, then the AVX2
// FMA engine (sparse_tile_avx2.cc).
#include "kernels/sparse.h"
#include "kernels/sparse_tile.h"

namespace compressd::kernels {

void GemmSparseAvx2(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                    int64_t row_begin, int64_t row_end) {
  DecodedGemmAvx2(w, x, n, y, ldy, row_begin, row_end, SparseDecodeRef);
}

}  // namespace compressd::kernels
