// GGUF block formats Q8_0 and Q4_0: packed structs as stored in a GGUF file, and scalar
// quantize / dequantize references (the test oracle for every faster kernel).
// Blocks hold 32 consecutive elements of one row; a row of n elements is n/32 blocks.
// Q8_0: x = d * q,       d = max|x| / 127 (fp16), q int8.
// Q4_0: x = d * (q - 8), d = (value of largest magnitude) / -8 (fp16), q in [0, 15];
//       byte j of qs holds element j in its low nibble and element j + 16 in its high one.
// Pure functions; any thread.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/types.h"

namespace compressd {

inline constexpr int kGgmlBlockSize = 32;

#pragma pack(push, 1)
struct BlockQ8_0 {
  uint16_t d;  // fp16 scale
  int8_t qs[kGgmlBlockSize];
};
struct BlockQ4_0 {
  uint16_t d;  // fp16 scale
  uint8_t qs[kGgmlBlockSize / 2];
};
#pragma pack(pop)
static_assert(sizeof(BlockQ8_0) == 34, "BlockQ8_0 must be 34 bytes");
static_assert(sizeof(BlockQ4_0) == 18, "BlockQ4_0 must be 18 bytes");

// `n` must be a multiple of 32 (callers check; these are references, not validators).
inline void QuantizeRowQ8_0(const float* x, int64_t n, BlockQ8_0* out) {
  for (int64_t b = 0; b < n / kGgmlBlockSize; ++b) {
    const float* xb = x + b * kGgmlBlockSize;
    float amax = 0.0f;
    for (int j = 0; j < kGgmlBlockSize; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    out[b].d = kernels::F32ToF16(d);
    for (int j = 0; j < kGgmlBlockSize; ++j) {
      const float q = std::round(xb[j] * id);
      out[b].qs[j] = static_cast<int8_t>(std::clamp(q, -127.0f, 127.0f));
    }
  }
}

inline void DequantizeRowQ8_0(const BlockQ8_0* in, int64_t n, float* y) {
  for (int64_t b = 0; b < n / kGgmlBlockSize; ++b) {
    const float d = kernels::F16ToF32(in[b].d);
    for (int j = 0; j < kGgmlBlockSize; ++j) y[b * kGgmlBlockSize + j] = d * in[b].qs[j];
  }
}

inline void QuantizeRowQ4_0(const float* x, int64_t n, BlockQ4_0* out) {
  constexpr int kHalf = kGgmlBlockSize / 2;
  for (int64_t b = 0; b < n / kGgmlBlockSize; ++b) {
    const float* xb = x + b * kGgmlBlockSize;
    float amax = 0.0f;
    float max = 0.0f;  // signed value of largest magnitude
    for (int j = 0; j < kGgmlBlockSize; ++j) {
      if (std::fabs(xb[j]) > amax) {
        amax = std::fabs(xb[j]);
        max = xb[j];
      }
    }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    out[b].d = kernels::F32ToF16(d);
    auto code = [&](float v) -> uint8_t {
      const float q = std::round(v * id) + 8.0f;
      return static_cast<uint8_t>(std::clamp(q, 0.0f, 15.0f));
    };
    for (int j = 0; j < kHalf; ++j) {
      out[b].qs[j] = static_cast<uint8_t>(code(xb[j]) | (code(xb[j + kHalf]) << 4));
    }
  }
}

inline void DequantizeRowQ4_0(const BlockQ4_0* in, int64_t n, float* y) {
  constexpr int kHalf = kGgmlBlockSize / 2;
  for (int64_t b = 0; b < n / kGgmlBlockSize; ++b) {
    const float d = kernels::F16ToF32(in[b].d);
    float* yb = y + b * kGgmlBlockSize;
    for (int j = 0; j < kHalf; ++j) {
      yb[j] = d * (static_cast<int>(in[b].qs[j] & 0x0f) - 8);
      yb[j + kHalf] = d * (static_cast<int>(in[b].qs[j] >> 4) - 8);
    }
  }
}

}  // namespace compressd
