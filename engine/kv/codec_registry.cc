// Registration of the built-in compressed KV codec families. MakeKvCodec/KvCodecNames
// (dense_codec.cc) call RegisterBuiltinKvCodecs once; registering from static initialisers
// instead would be dropped by static-library linking.
#include "engine/kv/codecs.h"
#include "engine/kv/kv_codec.h"

namespace compressd {

void RegisterBuiltinKvCodecs() {
  // Order matters: cskv wraps any other codec ("cskv+int4"), so it goes first; then the
  // selective family, which claims "ems+int4" before the quant family would reject it.
  RegisterKvCodecMaker(&MakeCskvKvCodec, {"cskv"});
  RegisterKvCodecMaker(&MakeMiniCacheKvCodec, {"minicache"});
  RegisterKvCodecMaker(&MakeSelectKvCodec, {"mikv", "ems"});
  RegisterKvCodecMaker(&MakeQuantKvCodec, {"int8", "int4", "int2", "gear"});
}

}  // namespace compressd
