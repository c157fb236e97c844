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

}  // namespace compressd
