// y = x W^T for every weight format: the fused dequantize-and-multiply entry point.
//
// Contract: x is [n][cols] row-major fp32 (activations), y is [n][ldy] fp32; only output
// columns r in [row_begin, row_end) are written. Calls over disjoint row ranges may run
// concurrently (that is how the engine spreads one GEMM over its threads). No allocation,
// no global state beyond the CPU-feature dispatch.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/weight_format.h"

namespace compressd::kernels {

// True when Gemm() can run this format on the CPU.
bool GemmSupports(const WeightFormat& format);

// Row ranges handed to Gemm() should start at multiples of this (packing granularity).
int64_t GemmRowAlign(const WeightFormat& format);

void Gemm(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
          int64_t row_begin, int64_t row_end);

// Activations quantized once and shared by several Gemm() calls over the same x. The A8
// kernels otherwise quantize x in every call: once per thread and per linear, which at 16
// tokens cost ~10% of a decode step (issue #3). Usage, for one x:
//   if (ActCacheReserve(w, x, n, &c)) { ActCacheFill(w, b, e, &c) over [0, n); }
//   Gemm(w_i, x, n, y_i, ldy, row_begin, row_end, &c) for each linear and row range;
//   c.Clear() before x changes.
// ActCacheFill over disjoint token ranges may run concurrently. A kernel uses the cache only
// when it was built for the same x, n and activation layout (any weight of the same format
// and cols), and otherwise quantizes x itself: results are identical either way.
struct ActCache {
  // The activation layout ActCacheReserve chose (each kernel's own order), or kNone: empty.
  enum Kind { kNone = 0, kQuant4A8 = 1, kGgufQ4_0 = 2, kGgufQ8_0 = 3, kQuant8A16 = 4, kQuant8A8 = 5,
              kQuant4A8Sb = 6 };
  int kind = kNone;
  const float* x = nullptr;
  int64_t n = 0, cols = 0, cols_pad = 0, group = 0;
  int64_t q_stride = 0, s_stride = 0, sum_stride = 0, c_stride = 0;  // per token
  std::vector<int8_t> q;
  std::vector<float> s, sum;
  std::vector<int32_t> c;
  std::vector<int16_t> q16;  // kQuant8A16: int16 activations
  void Clear() {
    kind = kNone;
    x = nullptr;
  }
};
// Sizes `c` for Gemm(w, x, n, ...); false (and c left empty) when w's kernel on this CPU has
// no shareable activations.
bool ActCacheReserve(const PackedWeight& w, const float* x, int64_t n, ActCache* c);
// Quantizes tokens [t_begin, t_end) of the reserved x into c.
void ActCacheFill(int64_t t_begin, int64_t t_end, ActCache* c);
void Gemm(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
          int64_t row_begin, int64_t row_end, const ActCache* acts);

// Scalar reference of Gemm(): the test oracle for every fast path. Dequantizes one row at
// a time and accumulates in double.
void GemmRef(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
             int64_t row_begin, int64_t row_end);

// Dequantize rows [row_begin,row_end) of W into out[(r-row_begin)*cols + c] (fp32).
// Every format implements it; it is the definition of the format's values.
void DequantizeRows(const PackedWeight& w, int64_t row_begin, int64_t row_end, float* out);

// Dense formats (F32/F16/BF16), per ISA. Exposed for parity tests and benchmarks.
void GemmDenseRef(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                  int64_t row_begin, int64_t row_end);
void GemmDenseAvx2(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                   int64_t row_begin, int64_t row_end);
void GemmDenseAvx512(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                     int64_t row_begin, int64_t row_end);

// BF16 weights on CPUs with AVX512_BF16 multiply with vdpbf16ps, so their product is defined
// with activations rounded to bf16 (round to nearest even, once per call): y = sum_c w_c *
// bf16(x_c), accumulated in fp32, with subnormal weights and activations taken as zero (as
// vdpbf16ps does). |y - (exact y)| <= 2^-9 sum_c |w_c x_c| (+ the flushed subnormals). Every
// token's outputs are the same whatever the batch and row range (batch invariant).
// True when GemmDenseAvx512 (and Gemm() under the active ISA) takes that path for `format`.
bool GemmDenseUsesBf16Dot(const WeightFormat& format);
// Scalar definition of that product (double accumulation): the oracle of the fast path.
void GemmDenseBf16DotRef(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
                         int64_t row_begin, int64_t row_end);

}  // namespace compressd::kernels
