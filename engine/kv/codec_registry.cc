// Registration of the built-in compressed KV codec families. MakeKvCodec/KvCodecNames
// (dense_codec.cc) call RegisterBuiltinKvCodecs once; registering from static initialisers
// instead would be dropped by static-library linking.
#include "engine/kv/codecs.h"
#include "engine/kv/kv_codec.h"

namespace compressd {

void RegisterBuiltinKvCodecs() {
  RegisterKvCodecMaker(&MakeQuantKvCodec, {"int8", "int4", "int2", "gear"});
}

}  // namespace compressd
