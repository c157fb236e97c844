// Fuzzes request validation on arbitrary protobuf bytes: the input is parsed as
// compressd.v1.GenerateRequest (then Tokenize/DetokenizeRequest) and validated against two
// model limits (a 16-token context, random:tiny-sized and 32k/4k). A request that validates
// must satisfy what the engine relies on (explicit token ids < vocab_size, max_tokens within
// the context) and hold at most 32 prompt bytes per context position, the bound checked
// before tokenizing (the 16-token context puts it within -max_len).
#include <cstddef>
#include <cstdint>

#include "compressd/v1/generation.pb.h"
#include "server/validation.h"

namespace v1 = compressd::v1;
using compressd::server::ModelLimits;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const ModelLimits limits[] = {{512, 16}, {512, 256}, {32000, 4096}};
  v1::GenerateRequest req;
  if (req.ParseFromArray(data, static_cast<int>(size))) {
    for (const ModelLimits& lim : limits) {
      if (!compressd::server::ValidateGenerateRequest(req, lim).ok()) continue;
      const auto ids = compressd::server::ExplicitPromptTokens(req);
      for (int32_t id : ids) {
        if (id < 0 || id >= lim.vocab_size) __builtin_trap();
      }
      if (req.max_tokens() > static_cast<uint32_t>(lim.context_length)) __builtin_trap();
      size_t prompt_bytes = req.prompt().size();
      for (const auto& m : req.chat().messages()) prompt_bytes += m.content().size();
      if (prompt_bytes > 32 * static_cast<size_t>(lim.context_length)) __builtin_trap();
      (void)compressd::server::ToEngineSampling(req.sampling());
      (void)compressd::server::ValidatePromptLength(static_cast<int64_t>(ids.size()),
                                                    req.max_tokens(), lim.context_length);
    }
  }
  v1::TokenizeRequest tok;
  if (tok.ParseFromArray(data, static_cast<int>(size))) {
    (void)compressd::server::ValidateTokenizeRequest(tok);
  }
  v1::DetokenizeRequest detok;
  if (detok.ParseFromArray(data, static_cast<int>(size))) {
    for (const ModelLimits& lim : limits) {
      (void)compressd::server::ValidateDetokenizeRequest(detok, lim);
    }
  }
  return 0;
}
