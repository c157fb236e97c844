// Makers of the compressed KV codec families (registered by codec_registry.cc). Each returns
// nullptr with *error OK when `name` is not of its family, nullptr with *error set when it is
// but its options are invalid, and the codec otherwise.
#pragma once

#include <memory>
#include <string>

#include "engine/kv/kv_codec.h"

namespace compressd {

// "int8" | "int4" | "int2", options after ':' (comma or colon separated):
//   gN  value group size (channels per value scale; default min(32, head_dim))
//   kN  key bits, vN value bits (2, 4 or 8; override the name's bits)
//   noclip  plain min/max ranges (default: clipped ranges chosen by least squared error)
// e.g. "int4:g32", "int4:v2", "int2:k4".
// "gear" (GEAR): the same base codes (2-bit unless combined, "gear+int4") plus, per block and
// KV head, a rank-r approximation of the quantization error (rN, default 1) and a sparse set
// of exact corrections for the largest remaining errors (oN entries or oP% of the block,
// default 2%), for K and V each. Options: bN base bits, plus the ones above.
std::unique_ptr<KvCodec> MakeQuantKvCodec(const std::string& name, const KvGeometry& g,
                                          absl::Status* error);

// Importance-aware codecs on token-selective blocks (select_codec.cc). Per block, a budget of
// fN percent of its tokens (all KV heads together, split between heads by importance unless
// "uniform") is kept at hi precision; sinkN: first N tokens of a sequence always hi (4).
// "mikv": the others at lo precision (hN hi bits 16|8|4|2, default 8; lN lo bits 2|4|8,
//   default 2; f20), e.g. "mikv:h4:l2:f25".
// "ems": the others evicted and merged into one slot per head (f50; "nomerge" drops them);
//   "noscore" (either family, an ablation): ignore attention, keep the earliest slots;
//   "ems+int8|int4|int2" keeps the tokens at that precision instead of fp16.
// gN: value group (channels per per-token scale), default min(32, head_dim).
std::unique_ptr<KvCodec> MakeSelectKvCodec(const std::string& name, const KvGeometry& g,
                                           absl::Status* error);

// CSKV channel shrinking (cskv_codec.cc): "cskv[:rN][+inner]" stores, per layer and KV head,
// the rN (default head_dim / 2) leading eigen-directions' features of K and V from calibration
// (KvCodec::Calibrate), encoded by the inner codec on a head_dim = rN geometry ("fp16" when
// none): "cskv+int4", "cskv:r8+int8", "cskv+mikv:h4:l2:f45".
std::unique_ptr<KvCodec> MakeCskvKvCodec(const std::string& name, const KvGeometry& g,
                                         absl::Status* error);
// MiniCache cross-layer merging (minicache_codec.cc): "minicache[:tA][:rP][+intN[:opts]]": from
// the middle layer on, adjacent layer pairs share one direction per token and KV head (SLERP of
// the two unit vectors) plus each layer's magnitude; tokens whose K or V angle exceeds tA
// degrees (default 45) are retained unmerged, up to rP percent of a block's tokens per KV head
// (default 25). fp16 storage, or with "+int8|int4|int2" (options of that codec: gN, kN, vN,
// noclip) the directions, retained rows and unpaired layers as KIVI blocks (magnitudes fp16):
// "minicache+int4", "minicache:t45:r25+int4:g32". SpansLayers() (kv_codec.h).
std::unique_ptr<KvCodec> MakeMiniCacheKvCodec(const std::string& name, const KvGeometry& g,
                                              absl::Status* error);
// Tests/diagnostics, -1 or 0 for other codecs: (token, KV head) pairs retained unmerged and
// retention candidates merged because the budget was full, since creation; the real bytes of
// one block (all layers); a decoded K (kv = 0) or V (1) row of `layer`'s region `block`.
int64_t MiniCacheRetained(const KvCodec& codec);
int64_t MiniCacheRetentionOverflow(const KvCodec& codec);
size_t MiniCacheTotalBlockBytes(const KvCodec& codec);
void MiniCacheDecode(const KvCodec& codec, int layer, const uint8_t* block, int h, int slot, int kv,
                     float* row);
// The scalar reference of a minicache codec's Attend (same arguments); false for other codecs.
bool MiniCacheAttendRef(const KvCodec& codec, int layer, const float* q,
                        const uint8_t* const* blocks, int n_ctx, float scale, float* out,
                        float* scratch, int head_begin, int head_end);

// Tests/diagnostics: decodes token `slot` of KV head h of a sealed or demoted (quant_demote.h)
// block of a quantized codec ("int8|int4|int2", GEAR); false for other codecs.
bool QuantKvDecodeToken(const KvCodec& codec, const uint8_t* block, int h, int slot, float* k,
                        float* v);

// Tests: fraction of calibration energy kept for K (kv = 0) or V (1); -1 if not a cskv codec.
double CskvEnergyKept(const KvCodec& codec, int kv, int layer, int h);

}  // namespace compressd
