// Chat template rendering: the subset of Jinja2 that Hugging Face chat templates use
// (Llama 3, Qwen2/ChatML, Mistral, SmolLM, Llama 2): for/if/elif/else/set, loop vars,
// string concatenation with +/~, comparisons, `in`, filters trim/length/tojson/upper/
// lower, raise_exception, and message['role'] / message.content access.
#pragma once

#include <string>
#include <vector>

#include "engine/core/status.h"

namespace compressd {

struct ChatMessage {
  std::string role;
  std::string content;
};

struct ChatTemplateOptions {
  bool add_generation_prompt = true;
  std::string bos_token;
  std::string eos_token;
};

// INVALID_ARGUMENT naming the construct for templates that use unsupported features or
// call raise_exception.
absl::StatusOr<std::string> RenderChatTemplate(const std::string& tmpl,
                                               const std::vector<ChatMessage>& messages,
                                               const ChatTemplateOptions& options);

// Template used when the model ships none: ChatML.
const std::string& DefaultChatTemplate();

}  // namespace compressd
