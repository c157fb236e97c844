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
// AVX-512 attention over a block table mixing base KIVI blocks and demoted regions
// (kernels/cpu/kv_mixed_avx512.cc; needs AVX-512 F/BW/VL/DQ: call only when ActiveIsa() is
// kAvx512). base: the base layout, without GEAR extras, chunk() 16, head_dim <= 256, at most 16
// value groups. dem: the demoted layout as a KvQuantLayout (block_size = DemotedLayout::tokens
// <= 256, k_bits, v_bits, v_group = vg), dem_tg = DemotedLayout::tg. blocks[i] is demoted
// (2 * base.block_size tokens) when is_demoted[i] != 0; the last block (the one reaching n_ctx)
// is read from tail_stage (fp16 staging, kv_quant.h) when that is not null and it is not
// demoted. Same contract as AttendKvQuant otherwise; the output does not depend on the head
// range split. The scalar reference is the engine codec's decode-then-softmax path
// (engine/kv/quant_codec.cc AttendMixed; the demoted layout: engine/kv/quant_demote.h).
void AttendKvMixedAvx512(const KvQuantLayout& base, const KvQuantLayout& dem, int dem_tg,
                         int n_heads, const float* q, const uint8_t* const* blocks,
                         const uint8_t* is_demoted, const uint16_t* tail_stage, int n_ctx,
                         float scale, float* out, int head_begin, int head_end);

// ---------------------------------------------------------------------------------------------
// Token-selective blocks (MiKV mixed precision, EMS evict-then-merge): within one block, each KV
// head's tokens are split by importance into "hi" tokens (hi_bits: 16 = fp16, 8, 4 or 2) and
// the rest, which are either kept at lo_bits (2, 4 or 8: MiKV) or evicted (lo_bits == 0) and,
// with `merge`, folded into one merge slot per head (EMS): the importance-weighted average of
// their K and V plus a logit bias of log(count), so that the slot stands in for that many
// tokens in the softmax. The hi budget `n_hi` is per block over all KV heads together; how it
// is split between heads (head-wise budgets) is chosen per block by the encoder, so BlockBytes
// is fixed. Positions are not stored: K already carries RoPE and softmax is order-free.
//
// Layout: header 16 bytes (uint32 state = kKvQuantSealed once encoded), then per KV head
//   uint64 hi_mask (bit t: slot t is hi), uint32 n_hi of this head, uint32 n_merged,
//   [hi_bits <= 4]  hi key scale[hd] f16, min[hd] f16   (per channel over the head's hi tokens)
//   [lo_bits 2|4]   lo key scale[hd] f16, min[hd] f16   (per channel over the head's lo tokens)
//   [merge]         merge K[hd] f16, V[hd] f16, bias f16, 2 bytes pad
// then the row pool: all heads' hi rows (head 0's first, each head's in slot order), then all
// heads' lo rows. A row of b bits is K then V:
//   b = 16: K[hd] f16, V[hd] f16;  b = 8: K (scale, min)[ng] f16 + codes[hd], V the same;
//   b = 2|4: K codes[hd*b/8] (per-channel params above), V (scale, min)[ng] f16 + codes.
// Codes are packed with PackKvCodes (chunk()).
struct KvSelectLayout {
  int block_size = 16;  // <= 64
  int n_kv_heads = 0;
  int head_dim = 0;
  int hi_bits = 16;     // 16, 8, 4 or 2
  int lo_bits = 0;      // 0 (evict), 2, 4 or 8
  int n_hi = 0;         // hi tokens per block, all KV heads together (<= block_size * n_kv_heads)
  bool merge = true;    // with lo_bits == 0: evicted tokens merged into one slot per head
  int v_group = 32;     // channels per per-token scale (values; keys at 8 bits)

  int chunk() const { return head_dim % 16 == 0 ? 16 : 8; }
  int n_groups() const { return head_dim / v_group; }
  int n_lo() const { return lo_bits > 0 ? block_size * n_kv_heads - n_hi : 0; }
  size_t RowBytes(int bits) const;
  size_t HeadFixedBytes() const;
  size_t BlockBytes() const {
    return kKvQuantHeader + HeadFixedBytes() * n_kv_heads + RowBytes(hi_bits) * n_hi +
           (lo_bits > 0 ? RowBytes(lo_bits) * n_lo() : 0);
  }
  bool Valid() const;
};

// Encodes a full block from its fp16 staging (dense [n_kv_heads][block_size][head_dim], K then
// V, as for KvQuantEncodeBlock) and per-token importance score[n_kv_heads][block_size] (higher
// = more important; `forced` slots, if not null, [block_size] nonzero = hi in every head, e.g.
// attention sinks). Head-wise budget: every head gets at least min(forced, n_hi / n_kv_heads /
// 2) hi tokens, the rest of n_hi go to the highest scores over all heads (`head_wise`), or
// exactly n_hi / n_kv_heads per head (+1 for the first n_hi % n_kv_heads heads) otherwise.
void KvSelectEncodeBlock(const KvSelectLayout& l, const uint16_t* stage, const float* score,
                         const uint8_t* forced, bool head_wise, uint8_t* dst);

// Dequantizes slot `slot` of KV head h (an evicted slot decodes to its merge slot, or zeros
// without one). Returns 1 = hi, 2 = lo, 0 = evicted.
int KvSelectDecodeToken(const KvSelectLayout& l, const uint8_t* block, int h, int slot, float* k,
                        float* v);

// Attention over a sequence of selective blocks: blocks[i] encoded, unless stages[i] != nullptr
// (fp16 staging of a block not encoded yet, read densely; its tokens' attention probabilities
// are added to stage_acc[i][kv_head * block_size + slot] when stage_acc and stage_acc[i] are not
// null). scratch: at least KvSelectScratchFloats(l, n_ctx) floats.
size_t KvSelectScratchFloats(const KvSelectLayout& l, int n_ctx);
// Dispatches by CPU features (ActiveIsa): AttendKvSelectAvx512 when the layout is supported,
// the scalar reference otherwise. Same contract as AttendKvSelectRef, which stays the oracle.
void AttendKvSelect(const KvSelectLayout& l, int n_heads, const float* q,
                    const uint8_t* const* blocks, const uint16_t* const* stages,
                    float* const* stage_acc, int n_ctx, float scale, float* out, float* scratch,
                    int head_begin, int head_end);
// Layouts the AVX-512 kernel takes (others fall back to the reference): a value group that is a
// multiple of chunk() and at most 16 groups per row. Callable on any CPU.
bool KvSelectAvx512Supports(const KvSelectLayout& l);
// Per-ISA entry point (tests and benchmarks call it directly; needs AVX-512 F/BW/VL/DQ). out and
// stage_acc are independent of how heads are split into [head_begin, head_end) ranges.
void AttendKvSelectAvx512(const KvSelectLayout& l, int n_heads, const float* q,
                          const uint8_t* const* blocks, const uint16_t* const* stages,
                          float* const* stage_acc, int n_ctx, float scale, float* out,
                          float* scratch, int head_begin, int head_end);
void AttendKvSelectRef(const KvSelectLayout& l, int n_heads, const float* q,
                       const uint8_t* const* blocks, const uint16_t* const* stages,
                       float* const* stage_acc, int n_ctx, float scale, float* out,
                       float* scratch, int head_begin, int head_end);

// The least-squares clipped asymmetric range used by the KIVI encoder (exposed for the
// selective encoder): fits scale/min (fp16) for x[i * stride], i < n.
void KvFitRange(const float* x, int n, int stride, int bits, bool clip_search, uint16_t* scale_h,
                uint16_t* min_h);

}  // namespace compressd::kernels
