// Format dispatch for Gemm(). Each weight family's kernels live in their own files.
#include "kernels/gemm.h"

#include "kernels/cpu_features.h"
#include "kernels/format_ops.h"
#include "kernels/ggml_quant.h"
#include "kernels/quant.h"

namespace compressd::kernels {
namespace {

const FormatOps* OpsFor(WeightKind kind) {
  switch (kind) {
    case WeightKind::kQuant:
    case WeightKind::kComposite:
      return &QuantFormatOps();
    case WeightKind::kSparse:
      return &SparseFormatOps();
    case WeightKind::kEntropy:
      return &Df11FormatOps();
    default:
      return nullptr;
  }
}

}  // namespace

bool GemmSupports(const WeightFormat& f) {
  if (f.kind == WeightKind::kDense) {
    return f.dtype == DType::kF32 || f.dtype == DType::kF16 || f.dtype == DType::kBF16;
  }
  const FormatOps* ops = OpsFor(f.kind);
  return ops != nullptr && ops->supports(f);
}

int64_t GemmRowAlign(const WeightFormat& f) {
  const FormatOps* ops = OpsFor(f.kind);
  return ops != nullptr ? ops->row_align(f) : 1;
}

void Gemm(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
          int64_t row_begin, int64_t row_end) {
  if (w.format.kind == WeightKind::kDense) {
    switch (ActiveIsa()) {
      case CpuIsa::kAvx512: return GemmDenseAvx512(w, x, n, y, ldy, row_begin, row_end);
      case CpuIsa::kAvx2: return GemmDenseAvx2(w, x, n, y, ldy, row_begin, row_end);
      case CpuIsa::kScalar: return GemmDenseRef(w, x, n, y, ldy, row_begin, row_end);
    }
    return;
  }
  const FormatOps* ops = OpsFor(w.format.kind);
  if (ops != nullptr) return ops->gemm(w, x, n, y, ldy, row_begin, row_end);
  GemmRef(w, x, n, y, ldy, row_begin, row_end);
}

namespace {

// The GGUF formats whose Gemm() takes GemmGgufA8Avx512 (see FormatGemm in ggml_quant.cc).
bool GemmUsesGgufA8(const WeightFormat& f) {
  return GgufQuantFormatOps().supports(f) && ActiveIsa() == CpuIsa::kAvx512 && GgufUsesA8(f);
}

}  // namespace

bool ActCacheReserve(const PackedWeight& w, const float* x, int64_t n, ActCache* c) {
  c->Clear();
  if (n <= 0) return false;
  if (GemmUsesQuant4A8(w.format)) {
    Quant4A8ActsReserve(w, x, n, c);
    return true;
  }
  if (GemmUsesGgufA8(w.format)) {
    GgufA8ActsReserve(w, x, n, c);
    return true;
  }
  if (QuantUsesA16(w.format)) {
    Quant8A16ActsReserve(w, x, n, c);
    return true;
  }
  if (GemmUsesQuant8A8(w.format)) {
    Quant8A8ActsReserve(w, x, n, c);
    return true;
  }
  return false;
}

void ActCacheFill(int64_t t_begin, int64_t t_end, ActCache* c) {
  if (c->kind == ActCache::kNone) return;
  if (c->kind == ActCache::kQuant4A8 || c->kind == ActCache::kQuant4A8Sb) {
    return Quant4A8ActsFill(t_begin, t_end, c);
  }
  if (c->kind == ActCache::kQuant8A16) return Quant8A16ActsFill(t_begin, t_end, c);
  if (c->kind == ActCache::kQuant8A8) return Quant8A8ActsFill(t_begin, t_end, c);
  GgufA8ActsFill(t_begin, t_end, c);
}

void Gemm(const PackedWeight& w, const float* x, int64_t n, float* y, int64_t ldy,
          int64_t row_begin, int64_t row_end, const ActCache* acts) {
  if (acts != nullptr && acts->kind != ActCache::kNone) {
    if (GemmUsesQuant4A8(w.format)) {
      return GemmQuant4A8Avx512Acts(w, x, n, y, ldy, row_begin, row_end, acts);
    }
    if (GemmUsesGgufA8(w.format)) {
      return GemmGgufA8Avx512Acts(w, x, n, y, ldy, row_begin, row_end, acts);
    }
    if (QuantUsesA16(w.format)) {
      return GemmQuant8A16Avx512Acts(w, x, n, y, ldy, row_begin, row_end, acts);
    }
    if (GemmUsesQuant8A8(w.format)) {
      return GemmQuant8A8Avx512Acts(w, x, n, y, ldy, row_begin, row_end, acts);
    }
  }
  Gemm(w, x, n, y, ldy, row_begin, row_end);
}

}  // namespace compressd::kernels
