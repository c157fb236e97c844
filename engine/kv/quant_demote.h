// Demoted KIVI blocks: the recompression step of the KV pressure ladder (engine/sched/ladder.h).
//
// Two adjacent, sealed, full blocks of one sequence (2 * block_size tokens, same layer) are
// re-encoded at half the bits (int8 -> int4, int4 -> int2) into ONE block region of the base
// layout's LayerBlockBytes, so the other physical block goes back to the pool. The demoted
// region is self-describing: its header's state word is kKvDemoted (a base block's is
// kernels::kKvQuantSealed, an unsealed one's 0), so Attend can read a table that mixes base and
// demoted blocks without any side channel.
//
// Layout of a demoted region (T = 2 * block_size tokens, C = the base layout's code chunk):
//   header 16 bytes: uint32 kKvDemoted, uint32 level (1), 8 reserved
//   per KV head h, in order:
//     K: kscale[hd] f16, kmin[hd] f16               (per channel over the T tokens)
//        kcodes[T][hd * kb / 8]                      (kb = base k_bits / 2)
//     V: vparam[T / tg][hd / vg][2] f16 (scale, min) (one pair per tg tokens x vg channels)
//        vcodes[T][hd * vb / 8]                      (vb = base v_bits / 2)
// vg = 2 * v_group when that divides head_dim (tg = 1), else vg = v_group and tg = 2: either way
// there are as many value parameters as in one base block, so the demoted region is never
// larger than the base one (K params per channel, codes at half the bits for twice the tokens;
// GEAR's error extras are dropped). Codes are packed with kernels::PackKvCodes.
//
// The demoted values are a re-quantization of the base block's dequantized values (the fp16
// originals are gone once a block is sealed): the error is the base error plus the demoted one.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/kv_quant.h"

namespace compressd {

constexpr uint32_t kKvDemoted = 0x3144564bu;  // "KVD1"

struct DemotedLayout {
  int tokens = 0;  // 2 * base block_size
  int n_kv_heads = 0;
  int head_dim = 0;
  int k_bits = 0;
  int v_bits = 0;
  int vg = 0;  // channels per value parameter pair
  int tg = 1;  // tokens per value parameter pair
  int chunk = 16;

  size_t KRowBytes() const { return static_cast<size_t>(head_dim) * k_bits / 8; }
  size_t VRowBytes() const { return static_cast<size_t>(head_dim) * v_bits / 8; }
  size_t VParams() const { return static_cast<size_t>(tokens / tg) * (head_dim / vg); }
  size_t HeadBytes() const {
    return 4u * head_dim + KRowBytes() * tokens + VParams() * 4 + VRowBytes() * tokens;
  }
  size_t BlockBytes() const { return kernels::kKvQuantHeader + HeadBytes() * n_kv_heads; }
};

// The demoted layout of a base layout, or false when the base cannot be demoted to at least
// min_bits (bits not halvable to {2, 4}, or the result would not fit the base block).
bool DemotedLayoutOf(const kernels::KvQuantLayout& base, int min_bits, DemotedLayout* out);

// True when the region's header marks it demoted.
bool IsDemotedBlock(const uint8_t* block);

// Encodes T tokens of one layer: k and v are [n_kv_heads][T][head_dim] fp32. Writes the header.
void EncodeDemotedBlock(const DemotedLayout& l, const float* k, const float* v, bool clip_search,
                        uint8_t* dst);

// Dequantizes token `slot` (< T) of KV head h (the scalar reference of the format).
void DecodeDemotedToken(const DemotedLayout& l, const uint8_t* block, int h, int slot, float* k,
                        float* v);

// Dequantizes tokens [0, n) of KV head h into k and v ([n][head_dim] fp32 each): of a demoted
// region, or of a sealed base block (GEAR extras included). Same values as the per-token
// decoders (DecodeDemotedToken, kernels::KvQuantDecodeToken), without their per-token overhead.
void DecodeDemotedHead(const DemotedLayout& l, const uint8_t* block, int h, int n, float* k,
                       float* v);
void DecodeBaseHead(const kernels::KvQuantLayout& l, const uint8_t* block, int h, int n, float* k,
                    float* v);

}  // namespace compressd
