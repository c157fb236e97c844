// Element-wise and row-wise ops of the transformer block, fp32 in and out.
// Each has a scalar reference (suffix Ref) used as the test oracle; the unsuffixed entry
// point dispatches on ActiveIsa(). Pointers may alias only where stated.
#pragma once

#include <cstdint>

namespace compressd::kernels {

// out[i] = x[i] / rms(x) * w[i]; out may alias x.
void RmsNorm(const float* x, const float* w, int64_t n, float eps, float* out);
void RmsNormRef(const float* x, const float* w, int64_t n, float eps, float* out);

// Rotate-half RoPE (Hugging Face / NeoX layout) applied in place to n_heads vectors of
// head_dim: pairs (i, i + head_dim/2) rotated by angle with cos[i], sin[i], i < head_dim/2.
void RopeRotateHalf(float* v, int n_heads, int head_dim, const float* cos, const float* sin);

// out[i] = silu(gate[i]) * up[i]; out may alias gate or up.
void SiluMul(const float* gate, const float* up, float* out, int64_t n);
void SiluMulRef(const float* gate, const float* up, float* out, int64_t n);

// y[i] += x[i]
void AddInPlace(float* y, const float* x, int64_t n);

// In-place softmax of n values; returns nothing, handles -inf entries.
void SoftmaxInPlace(float* x, int64_t n);

float Dot(const float* a, const float* b, int64_t n);

// Scalar references (test oracles) of the ops above that have no Ref declared beside them.
void RopeRotateHalfRef(float* v, int n_heads, int head_dim, const float* cos, const float* sin);
void AddInPlaceRef(float* y, const float* x, int64_t n);
void SoftmaxInPlaceRef(float* x, int64_t n);
float DotRef(const float* a, const float* b, int64_t n);

// Per-ISA versions, for parity tests and benchmarks (callers normally use the dispatching
// entry points). ExpIsa: out[i] = exp(x[i]), relative error < 2e-7 on [-88, 88].
#define COMPRESSD_DECLARE_ISA_OPS(Isa)                                                       \
  void RmsNorm##Isa(const float* x, const float* w, int64_t n, float eps, float* out);     \
  void SiluMul##Isa(const float* gate, const float* up, float* out, int64_t n);            \
  void AddInPlace##Isa(float* y, const float* x, int64_t n);                               \
  void SoftmaxInPlace##Isa(float* x, int64_t n);                                           \
  float Dot##Isa(const float* a, const float* b, int64_t n);                               \
  void RopeRotateHalf##Isa(float* v, int n_heads, int head_dim, const float* cos,          \
                           const float* sin);                                              \
  void Exp##Isa(const float* x, float* out, int64_t n);
COMPRESSD_DECLARE_ISA_OPS(Avx2)
COMPRESSD_DECLARE_ISA_OPS(Avx512)
#undef COMPRESSD_DECLARE_ISA_OPS

}  // namespace compressd::kernels
