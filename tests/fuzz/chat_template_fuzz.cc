// Fuzzes the chat template renderer (RenderChatTemplate): the input is the Jinja template,
// optionally followed by "\n#MSG#\n" and text that becomes the content of the user turns.
// A fixed conversation (system, user, assistant, user) is rendered with and without the
// generation prompt. Any outcome but a crash/hang is acceptable: bad templates must be
// INVALID_ARGUMENT.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/model/chat_template.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string tmpl(reinterpret_cast<const char*>(data), size);
  std::string user = "Hello, how are you?";
  static const std::string kSep = "\n#MSG#\n";
  if (const size_t at = tmpl.find(kSep); at != std::string::npos) {
    user = tmpl.substr(at + kSep.size());
    tmpl.resize(at);
  }
  const std::vector<compressd::ChatMessage> messages = {
      {"system", "You are a helpful assistant."},
      {"user", user},
      {"assistant", "I am fine. {{ not a template }} <|im_end|>"},
      {"user", user},
  };
  for (bool gen : {true, false}) {
    compressd::ChatTemplateOptions options;
    options.add_generation_prompt = gen;
    options.bos_token = "<s>";
    options.eos_token = "</s>";
    (void)compressd::RenderChatTemplate(tmpl, messages, options);
  }
  // The default template with fuzzed content must always render.
  compressd::ChatTemplateOptions options;
  if (!compressd::RenderChatTemplate(compressd::DefaultChatTemplate(), messages, options).ok()) {
    __builtin_trap();
  }
  return 0;
}
