// Fuzzes the tokenizer.json loader (Tokenizer::FromJson). The input is tokenizer.json,
// optionally followed by "\n#CONFIG#\n" and a tokenizer_config.json. A tokenizer that
// loads must then encode and decode a fixed sample without crashing.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "engine/model/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::string_view cfg;
  constexpr std::string_view kSep = "\n#CONFIG#\n";
  if (const size_t at = in.find(kSep); at != std::string_view::npos) {
    cfg = in.substr(at + kSep.size());
    in = in.substr(0, at);
  }
  auto tok = compressd::Tokenizer::FromJson(in, cfg);
  if (!tok.ok()) return 0;
  const auto& t = **tok;
  for (bool special : {false, true}) {
    const auto ids = t.Encode("Once upon a time <s></s><|im_start|> 12345 \xc3\xa9\xe2\x96\x81\n\t!",
                              special, special);
    for (int32_t id : ids) {
      if (id < 0 || id >= t.vocab_size()) __builtin_trap();
    }
    (void)t.Decode(ids, !special);
  }
  for (int32_t id = 0; id < t.vocab_size() && id < 64; ++id) {
    (void)t.TokenBytes(id);
    (void)t.PieceToId(t.Piece(id));
  }
  return 0;
}
