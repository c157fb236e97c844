// Host-side repack of group-wise integer weights into the CUDA chunk layout
// (kernels/cuda_formats.h). Pure C++: no CUDA calls.
#include "kernels/cuda_formats.h"

#include <cassert>
#include <cstdio>
#include <cstdlib>

#include "kernels/types.h"

namespace compressd::kernels {
namespace {

// Column (inside its chunk) of the code stored at (word t, slot s) of a chunk. int4 slot
// s = nibble position 0..7; int8 slot s = byte 0..3.
int ChunkColumn(int bits, int t, int s) {
  if (bits == 4) {
    const int j = s & 3;  // pair index: nibbles j and j + 4 hold (p, p + 1)
    static constexpr int kPairBase[4] = {0, 8, 16, 24};
    return kPairBase[j] + 2 * t + (s >> 2);
  }
  // int8: bytes 0,1 -> 2t, 2t+1; bytes 2,3 -> 2t+8, 2t+9.
  return (s < 2 ? 0 : 8) + 2 * t + (s & 1);
}

void Fail(const std::string& why) {
  std::fprintf(stderr, "CudaQuantRepack: %s\n", why.c_str());
  std::abort();
}

}  // namespace

std::string CudaQuantCheck(const PlainQuantMatrix& m) {
  if (m.bits != 4 && m.bits != 8) return "bits must be 4 or 8";
  if (m.rows <= 0 || m.cols <= 0) return "rows and cols must be positive";
  if (m.group_size <= 0 || m.group_size % 32 != 0) return "group_size must be a multiple of 32";
  if (m.cols % m.group_size != 0) return "cols must be a multiple of group_size";
  if (m.codes == nullptr || m.scales == nullptr) return "codes and scales are required";
  return "";
}

CudaQuantWeight CudaQuantRepack(const PlainQuantMatrix& m) {
  const std::string why = CudaQuantCheck(m);
  if (!why.empty()) Fail(why);
  CudaQuantWeight w;
  w.rows = m.rows;
  w.cols = m.cols;
  w.group_size = m.group_size;
  w.bits = m.bits;
  const int chunk_cols = CudaQuantChunkCols(m.bits);
  const int64_t chunks = m.cols / chunk_cols;
  const int per_word = 32 / m.bits;
  w.codes.assign(static_cast<size_t>(m.rows * chunks) * kCudaQuantChunkBytes, 0);
  for (int64_t r = 0; r < m.rows; ++r) {
    for (int64_t ch = 0; ch < chunks; ++ch) {
      uint8_t* dst = w.codes.data() + (r * chunks + ch) * kCudaQuantChunkBytes;
      const uint8_t* src = m.codes + r * m.cols + ch * chunk_cols;
      for (int t = 0; t < 4; ++t) {
        uint32_t word = 0;
        for (int s = 0; s < per_word; ++s) {
          const uint32_t code = src[ChunkColumn(m.bits, t, s)] & ((1u << m.bits) - 1);
          word |= code << (s * m.bits);
        }
        // Little-endian word, as the device reads it.
        for (int b = 0; b < 4; ++b) dst[4 * t + b] = static_cast<uint8_t>(word >> (8 * b));
      }
    }
  }
  const int64_t groups = m.cols / m.group_size;
  w.scale_offset.resize(static_cast<size_t>(m.rows * groups) * 2);
  const float default_zero = static_cast<float>(1 << (m.bits - 1));
  for (int64_t i = 0; i < m.rows * groups; ++i) {
    const float s = m.scales[i];
    const float z = m.zeros ? m.zeros[i] : default_zero;
    const uint16_t s16 = F32ToF16(s);
    w.scale_offset[2 * i] = s16;
    // The offset pairs with the fp16-rounded scale so code == zero decodes to ~0.
    w.scale_offset[2 * i + 1] = m.mins ? F32ToF16(m.mins[i]) : F32ToF16(-z * F16ToF32(s16));
  }
  return w;
}

uint32_t CudaQuantCode(const CudaQuantWeight& w, int64_t r, int64_t c) {
  const int chunk_cols = CudaQuantChunkCols(w.bits);
  const int64_t chunks = w.cols / chunk_cols;
  const uint8_t* chunk = w.codes.data() + (r * chunks + c / chunk_cols) * kCudaQuantChunkBytes;
  const int in = static_cast<int>(c % chunk_cols);
  const int per_word = 32 / w.bits;
  for (int t = 0; t < 4; ++t) {
    for (int s = 0; s < per_word; ++s) {
      if (ChunkColumn(w.bits, t, s) != in) continue;
      uint32_t word = 0;
      for (int b = 0; b < 4; ++b) word |= static_cast<uint32_t>(chunk[4 * t + b]) << (8 * b);
      return (word >> (s * w.bits)) & ((1u << w.bits) - 1);
    }
  }
  assert(false);
  return 0;
}

void CudaQuantDequantizeRow(const CudaQuantWeight& w, int64_t r, float* out) {
  const int64_t groups = w.cols / w.group_size;
  for (int64_t c = 0; c < w.cols; ++c) {
    const size_t g = static_cast<size_t>(r * groups + c / w.group_size);
    const double s = F16ToF32(w.scale_offset[2 * g]);
    const double o = F16ToF32(w.scale_offset[2 * g + 1]);
    // hfma rounds the exact code * s + o once to fp16.
    out[c] = F16ToF32(F32ToF16(static_cast<float>(CudaQuantCode(w, r, c) * s + o)));
  }
}

}  // namespace compressd::kernels
