// Decode/prefill attention of one query token over a paged KV cache in a dense format.
// Compressed KV codecs (engine/kv) provide their own kernels with the same shape.
//
// Block layout for dense KV (F32, F16, BF16): each block holds K and V for block_size
// tokens as [n_kv_heads][block_size][head_dim] elements of kv_dtype. Token t of the
// sequence lives in block t / block_size, slot t % block_size.
#pragma once

#include <cstdint>

#include "kernels/types.h"

namespace compressd::kernels {

struct DenseKvLayout {
  DType dtype = DType::kF32;
  int block_size = 16;
  int n_kv_heads = 0;
  int head_dim = 0;
};

// q: [n_heads][head_dim]; out: [n_heads][head_dim]; k_blocks/v_blocks: per block base
// pointer of K and V for this layer; attends to tokens [0, n_ctx). Grouped-query: head h
// reads KV head h / (n_heads / n_kv_heads). scratch: at least n_ctx floats.
// Heads [head_begin, head_end) only, so callers can split heads across threads.
void AttendDense(const DenseKvLayout& layout, int n_heads, const float* q,
                 const void* const* k_blocks, const void* const* v_blocks, int n_ctx,
                 float scale, float* out, float* scratch, int head_begin, int head_end);
void AttendDenseRef(const DenseKvLayout& layout, int n_heads, const float* q,
                    const void* const* k_blocks, const void* const* v_blocks, int n_ctx,
                    float scale, float* out, float* scratch, int head_begin, int head_end);

void AttendDenseAvx2(const DenseKvLayout& layout, int n_heads, const float* q,
                     const void* const* k_blocks, const void* const* v_blocks, int n_ctx,
                     float scale, float* out, float* scratch, int head_begin, int head_end);
void AttendDenseAvx512(const DenseKvLayout& layout, int n_heads, const float* q,
                       const void* const* k_blocks, const void* const* v_blocks, int n_ctx,
                       float scale, float* out, float* scratch, int head_begin, int head_end);

// Writes one token's K and V ([n_kv_heads][head_dim] fp32 each) into slot of a block.
// F16/BF16 round to nearest even (F32ToF16 / F32ToBF16 in types.h); the AVX-512 version
// stores the same bits for every non-NaN input (a NaN stays a NaN).
void StoreDenseKv(const DenseKvLayout& layout, void* k_block, void* v_block, int slot,
                  const float* k, const float* v);
void StoreDenseKvRef(const DenseKvLayout& layout, void* k_block, void* v_block, int slot,
                     const float* k, const float* v);
void StoreDenseKvAvx512(const DenseKvLayout& layout, void* k_block, void* v_block, int slot,
                        const float* k, const float* v);

}  // namespace compressd::kernels
