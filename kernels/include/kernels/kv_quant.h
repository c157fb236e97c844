// KIVI-style quantized KV blocks and the attention kernel that reads them directly.
//
// One encoded block (one layer, block_size tokens, all KV heads):
//   header  16 bytes (uint32 state: kKvQuantSealed once encoded; the rest reserved)
//   per KV head h, in order:
//     K: kscale[head_dim] f16, kmin[head_dim] f16      (per channel over the block's tokens)
//        kcodes[block_size][head_dim * k_bits / 8]      (token-major rows)
//     V: vparam[block_size][n_groups][2] f16 (scale, min per token per group of v_group channels)
//        vcodes[block_size][head_dim * v_bits / 8]
//     (GEAR extras, when rank > 0 or outliers > 0; K's then V's:)
//     lr_a[block_size][rank] f16, lr_b[head_dim][rank] f16   (low-rank quantization error)
//     outl[outliers] {uint16 index t * head_dim + d, f16 correction}  (sparse error set)
// Dequantization: k[t][d] = kmin[d] + kscale[d] * code; v[t][d] = vmin[t][g] + vscale[t][g] * code,
// plus (GEAR) sum_r a[t][r] b[d][r] and the correction of an outlier at (t, d).
//
// Code packing (chosen so that a SIMD lane-expand needs no shuffles): channels are taken in
// chunks of C = 16 (or 8 when head_dim % 16 != 0); a chunk uses C * bits / 8 bytes and channel c
// of the chunk lives in byte c % (C * bits / 8) at bit offset bits * (c / (C * bits / 8)).
//
// A block that is not yet full is not encoded: its tokens sit in an fp16 staging buffer owned by
// the codec (dense layout: K [n_kv_heads][block_size][head_dim] then V the same), KIVI's
// full-precision residual window. The attention kernel reads that buffer for the last block.
#pragma once

#include <cstddef>
#include <cstdint>

namespace compressd::kernels {

constexpr uint32_t kKvQuantSealed = 0x4b564e31u;  // "KVN1"
constexpr size_t kKvQuantHeader = 16;

struct KvQuantLayout {
  int block_size = 16;
  int n_kv_heads = 0;
  int head_dim = 0;
  int k_bits = 4;   // 2, 4 or 8
  int v_bits = 4;   // 2, 4 or 8
  int v_group = 32; // channels per value scale; divides head_dim, multiple of the chunk
  int rank = 0;      // GEAR: rank of the per-block, per-head error approximation (K and V)
  int outliers = 0;  // GEAR: sparse corrections per block per head (K and V each)

  int chunk() const { return head_dim % 16 == 0 ? 16 : 8; }
  int n_groups() const { return head_dim / v_group; }
  size_t KRowBytes() const { return static_cast<size_t>(head_dim) * k_bits / 8; }
  size_t VRowBytes() const { return static_cast<size_t>(head_dim) * v_bits / 8; }
  size_t KHeadBytes() const { return 4u * head_dim + KRowBytes() * block_size; }
  size_t VHeadBytes() const {
    return static_cast<size_t>(block_size) * n_groups() * 4 + VRowBytes() * block_size;
  }
  size_t ExtraBytes() const {  // one of K/V
    return 2u * rank * (block_size + head_dim) + 4u * outliers;
  }
  size_t HeadBytes() const { return KHeadBytes() + VHeadBytes() + 2 * ExtraBytes(); }
  size_t BlockBytes() const { return kKvQuantHeader + HeadBytes() * n_kv_heads; }
  // Valid when bits in {2,4,8}, head_dim % 8 == 0, v_group divides head_dim and is a multiple
  // of chunk(), rank <= 8, block_size * head_dim <= 65536 when outliers > 0.
  bool Valid() const;
};

// Packs/unpacks one row of codes (0 <= code < 2^bits) of n channels (n % chunk == 0).
void PackKvCodes(const uint8_t* codes, int n, int bits, int chunk, uint8_t* dst);
void UnpackKvCodes(const uint8_t* src, int n, int bits, int chunk, uint8_t* codes);

// Encodes a full block from its fp16 staging buffer (dense layout, see above) into dst
// (BlockBytes() bytes) and writes the sealed header. clip_search: try shrunken ranges and keep
// the one with the least squared error (used for bits <= 4).
void KvQuantEncodeBlock(const KvQuantLayout& l, const uint16_t* stage, uint8_t* dst,
                        bool clip_search);

// Dequantizes token `slot` of KV head `h` of an encoded block (tests, reference).
void KvQuantDecodeToken(const KvQuantLayout& l, const uint8_t* block, int h, int slot, float* k,
                        float* v);

// out[h] = softmax(scale * q[h] . K) V over tokens [0, n_ctx) for heads [head_begin, head_end).
// blocks[i]: encoded block i (header sealed) — except the last block (index (n_ctx-1)/bs), which
// is read from tail_stage when tail_stage != nullptr. Grouped-query: head h reads KV head
// h / (n_heads / n_kv_heads). scratch: at least n_ctx floats. Dequantizes in registers only.
void AttendKvQuant(const KvQuantLayout& l, int n_heads, const float* q,
                   const uint8_t* const* blocks, const uint16_t* tail_stage, int n_ctx,
                   float scale, float* out, float* scratch, int head_begin, int head_end);
void AttendKvQuantRef(const KvQuantLayout& l, int n_heads, const float* q,
                      const uint8_t* const* blocks, const uint16_t* tail_stage, int n_ctx,
                      float scale, float* out, float* scratch, int head_begin, int head_end);
// Per-ISA entry point (AttendKvQuant dispatches; tests and benchmarks call it directly).
void AttendKvQuantAvx512(const KvQuantLayout& l, int n_heads, const float* q,
                         const uint8_t* const* blocks, const uint16_t* tail_stage, int n_ctx,
                         float scale, float* out, float* scratch, int head_begin, int head_end);

}  // namespace compressd::kernels
