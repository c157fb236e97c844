// y = x W^T for every weight format: the fused dequantize-and-multiply entry point.
//
// Contract: x is [n][cols] row-major fp32 (activations), y is [n][ldy] fp32; only output
// columns r in [row_begin, row_end) are written. Calls over disjoint row ranges may run
// concurrently (that is how the engine spreads one GEMM over its threads). No allocation,
// no global state beyond the CPU-feature dispatch.
#pragma once

#include <cstdint>

#include "kernels/weight_format.h"

namespace compressd::kernels {

// True when Gemm() can run this format on the CPU.
bool GemmSupports(const WeightFormat& format);

// Row ranges handed to Gemm() should start at multiples of this (packing granularity).
int64_t GemmRowAlign(const WeightFormat& format);

void Gemm(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
          int64_t row_begin, int64_t row_end);

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
