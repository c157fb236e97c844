// The KIVI block layout of a quantized codec, for codecs that store KIVI blocks inside a layout
// of their own ("minicache+int4": minicache_codec.cc). The outer codec builds the inner one by
// name (MakeKvCodec("int4:g32", g)), so the quant family parses and validates the options, with
// its own messages, and then reads back the layout to encode with kernels::KvQuantEncodeBlock
// and decode with kernels::KvQuantDecodeToken / DecodeBaseHead (quant_demote.h).
#pragma once

#include "engine/kv/kv_codec.h"
#include "kernels/kv_quant.h"

namespace compressd {

// The layout and clip-search setting of a codec made by MakeQuantKvCodec ("int8|int4|int2",
// GEAR: rank/outliers > 0); false (outputs untouched) for any other codec.
bool QuantKvLayoutOf(const KvCodec& codec, kernels::KvQuantLayout* layout, bool* clip_search);

}  // namespace compressd
