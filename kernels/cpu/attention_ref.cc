#include <cmath>

#include "kernels/attention.h"
#include "kernels/cpu_features.h"
#include "kernels/ops.h"

namespace compressd::kernels {

namespace {

inline float Load(DType t, const void* base, int64_t i) {
  switch (t) {
    case DType::kF32: return static_cast<const float*>(base)[i];
    case DType::kF16: return F16ToF32(static_cast<const uint16_t*>(base)[i]);
    case DType::kBF16: return BF16ToF32(static_cast<const uint16_t*>(base)[i]);
    default: return 0.0f;
  }
}

inline void Store(DType t, void* base, int64_t i, float v) {
  switch (t) {
    case DType::kF32: static_cast<float*>(base)[i] = v; break;
    case DType::kF16: static_cast<uint16_t*>(base)[i] = F32ToF16(v); break;
    case DType::kBF16: static_cast<uint16_t*>(base)[i] = F32ToBF16(v); break;
    default: break;
  }
}

}  // namespace

void StoreDenseKv(const DenseKvLayout& l, void* k_block, void* v_block, int slot, const float* k,
                  const float* v) {
  if (ActiveIsa() == CpuIsa::kAvx512) return StoreDenseKvAvx512(l, k_block, v_block, slot, k, v);
  StoreDenseKvRef(l, k_block, v_block, slot, k, v);
}

void StoreDenseKvRef(const DenseKvLayout& l, void* k_block, void* v_block, int slot,
                     const float* k, const float* v) {
  for (int h = 0; h < l.n_kv_heads; ++h) {
    const int64_t base = (static_cast<int64_t>(h) * l.block_size + slot) * l.head_dim;
    for (int d = 0; d < l.head_dim; ++d) {
      Store(l.dtype, k_block, base + d, k[h * l.head_dim + d]);
      Store(l.dtype, v_block, base + d, v[h * l.head_dim + d]);
    }
  }
}

void AttendDenseRef(const DenseKvLayout& l, int n_heads, const float* q,
                    const void* const* k_blocks, const void* const* v_blocks, int n_ctx,
                    float scale, float* out, float* scratch, int head_begin, int head_end) {
  const int group = n_heads / l.n_kv_heads;
  for (int h = head_begin; h < head_end; ++h) {
    const int kvh = h / group;
    const float* qh = q + static_cast<int64_t>(h) * l.head_dim;
    for (int t = 0; t < n_ctx; ++t) {
      const void* kb = k_blocks[t / l.block_size];
      const int64_t base = (static_cast<int64_t>(kvh) * l.block_size + t % l.block_size) * l.head_dim;
      double s = 0.0;
      for (int d = 0; d < l.head_dim; ++d) s += static_cast<double>(qh[d]) * Load(l.dtype, kb, base + d);
      scratch[t] = static_cast<float>(s) * scale;
    }
    SoftmaxInPlaceRef(scratch, n_ctx);  // the oracle uses only scalar code
    float* oh = out + static_cast<int64_t>(h) * l.head_dim;
    for (int d = 0; d < l.head_dim; ++d) oh[d] = 0.0f;
    for (int t = 0; t < n_ctx; ++t) {
      const void* vb = v_blocks[t / l.block_size];
      const int64_t base = (static_cast<int64_t>(kvh) * l.block_size + t % l.block_size) * l.head_dim;
      const float p = scratch[t];
      for (int d = 0; d < l.head_dim; ++d) oh[d] += p * Load(l.dtype, vb, base + d);
    }
  }
}

void AttendDense(const DenseKvLayout& l, int n_heads, const float* q, const void* const* k_blocks,
                 const void* const* v_blocks, int n_ctx, float scale, float* out, float* scratch,
                 int head_begin, int head_end) {
  switch (ActiveIsa()) {
    case CpuIsa::kAvx512:
      return AttendDenseAvx512(l, n_heads, q, k_blocks, v_blocks, n_ctx, scale, out, scratch,
                               head_begin, head_end);
    case CpuIsa::kAvx2:
      return AttendDenseAvx2(l, n_heads, q, k_blocks, v_blocks, n_ctx, scale, out, scratch,
                             head_begin, head_end);
    case CpuIsa::kScalar:
      break;
  }
  AttendDenseRef(l, n_heads, q, k_blocks, v_blocks, n_ctx, scale, out, scratch, head_begin,
                 head_end);
}

}  // namespace compressd::kernels
