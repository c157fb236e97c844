#include "server/validation.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace compressd::server {
namespace {

using v1::GenerateRequest;

absl::Status Invalid(const std::string& msg) { return absl::InvalidArgumentError(msg); }

// A prompt (or the chat messages' contents together) may hold at most this many bytes per
// position of the context. Checked before tokenizing so that an oversized prompt costs a
// length comparison, not seconds of tokenizer CPU (a 10 MB prompt took 5-15 s to tokenize
// only to be refused for its token count). Real text averages 3-6 bytes per token, so 32
// leaves a wide margin for any prompt that could fit the context.
constexpr int64_t kMaxPromptBytesPerToken = 32;

absl::Status CheckPromptBytes(const char* field, size_t bytes, const ModelLimits& limits) {
  const int64_t max_bytes = kMaxPromptBytesPerToken * std::max<int64_t>(limits.context_length, 1);
  if (static_cast<int64_t>(bytes) > max_bytes) {
    return Invalid(absl::StrFormat(
        "%s has %d bytes; at most %d allowed (%d bytes per token of the context length %d), "
        "checked before tokenizing",
        field, bytes, max_bytes, kMaxPromptBytesPerToken, limits.context_length));
  }
  return absl::OkStatus();
}

// Finite and within [lo, hi]; NaN and infinities fail with their own wording.
absl::Status CheckFloat(const char* field, float value, float lo, float hi) {
  if (std::isnan(value)) {
    return Invalid(absl::StrFormat("%s is NaN; allowed [%g, %g]", field, lo, hi));
  }
  if (std::isinf(value)) {
    return Invalid(absl::StrFormat("%s is %s; allowed [%g, %g]", field,
                                   value > 0 ? "+inf" : "-inf", lo, hi));
  }
  if (value < lo || value > hi) {
    return Invalid(absl::StrFormat("%s is %g; allowed [%g, %g]", field, value, lo, hi));
  }
  return absl::OkStatus();
}

absl::Status CheckTokenIds(const char* field,
                           const google::protobuf::RepeatedField<uint32_t>& ids,
                           int32_t vocab_size) {
  for (int i = 0; i < ids.size(); ++i) {
    if (ids[i] >= static_cast<uint32_t>(vocab_size)) {
      return Invalid(absl::StrFormat("%s[%d] is %u; token ids must be in [0, %d) (vocab size %d)",
                                     field, i, ids[i], vocab_size, vocab_size));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckSampling(const v1::SamplingParams& s, const ModelLimits& limits) {
  RETURN_IF_ERROR(CheckFloat("sampling.temperature", s.temperature(), 0, 100));
  if (s.top_k() > static_cast<uint32_t>(limits.vocab_size)) {
    return Invalid(absl::StrFormat("sampling.top_k is %u; allowed [0, %d] (the vocab size)",
                                   s.top_k(), limits.vocab_size));
  }
  RETURN_IF_ERROR(CheckFloat("sampling.top_p", s.top_p(), 0, 1));
  RETURN_IF_ERROR(CheckFloat("sampling.min_p", s.min_p(), 0, 1));
  RETURN_IF_ERROR(CheckFloat("sampling.repetition_penalty", s.repetition_penalty(), 0, 10));
  RETURN_IF_ERROR(CheckFloat("sampling.presence_penalty", s.presence_penalty(), -2, 2));
  RETURN_IF_ERROR(CheckFloat("sampling.frequency_penalty", s.frequency_penalty(), -2, 2));
  return absl::OkStatus();
}

absl::Status CheckRequestId(const std::string& id) {
  if (id.size() > static_cast<size_t>(kMaxRequestIdBytes)) {
    return Invalid(absl::StrFormat("request_id has %d bytes; at most %d allowed", id.size(),
                                   kMaxRequestIdBytes));
  }
  // Ids are echoed in log lines; control characters or newlines would forge lines.
  for (size_t i = 0; i < id.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(id[i]);
    if (c < 0x20 || c > 0x7e) {
      return Invalid(absl::StrFormat(
          "request_id byte %d is 0x%02x; allowed printable ASCII (0x20..0x7e)", i, c));
    }
  }
  return absl::OkStatus();
}

// "" or one of the server's request codecs (the pool's block layout is shared by every
// request, so a request can only take the server's codec or the ladder's smaller one).
absl::Status CheckKvCache(const std::string& value, const ModelLimits& limits) {
  if (value.empty()) return absl::OkStatus();
  const auto& allowed = limits.kv_cache_codecs;
  if (std::find(allowed.begin(), allowed.end(), value) != allowed.end()) {
    return absl::OkStatus();
  }
  std::string list = "\"\" (the server's codec";
  if (!allowed.empty()) absl::StrAppend(&list, ", ", allowed.front());
  list += ")";
  for (const std::string& c : allowed) absl::StrAppend(&list, ", \"", c, "\"");
  return Invalid(absl::StrFormat(
      "kv_cache is '%s'; allowed on this server: %s (a request may only ask for the server's "
      "KV codec or the smaller codec its KV pressure ladder demotes to; see "
      "ModelInfo.kv_cache_request_codecs)",
      absl::CHexEscape(value.size() > 32 ? value.substr(0, 32) + "..." : value), list));
}

}  // namespace

absl::Status ValidateChat(const v1::ChatPrompt& chat, const char* field) {
  if (chat.messages_size() == 0) {
    return Invalid(absl::StrFormat("%s.messages is empty; at least one message is required",
                                   field));
  }
  if (chat.messages_size() > kMaxChatMessages) {
    return Invalid(absl::StrFormat("%s.messages has %d messages; at most %d allowed", field,
                                   chat.messages_size(), kMaxChatMessages));
  }
  for (int i = 0; i < chat.messages_size(); ++i) {
    const std::string& role = chat.messages(i).role();
    if (role != "system" && role != "user" && role != "assistant" && role != "tool") {
      return Invalid(absl::StrFormat(
          "%s.messages[%d].role is '%s'; allowed \"system\", \"user\", \"assistant\", \"tool\"",
          field, i, role.size() > 32 ? role.substr(0, 32) + "..." : role));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateGenerateRequest(const GenerateRequest& r, const ModelLimits& limits) {
  // Input: exactly one of prompt / prompt_tokens / chat / prompt_token_ids, non-empty.
  const bool flat_ids = r.prompt_token_ids_size() > 0;
  switch (r.input_case()) {
    case GenerateRequest::kPrompt:
      if (r.prompt().empty()) return Invalid("prompt is empty");
      RETURN_IF_ERROR(CheckPromptBytes("prompt", r.prompt().size(), limits));
      break;
    case GenerateRequest::kPromptTokens:
      if (r.prompt_tokens().ids_size() == 0) return Invalid("prompt_tokens.ids is empty");
      RETURN_IF_ERROR(
          CheckTokenIds("prompt_tokens.ids", r.prompt_tokens().ids(), limits.vocab_size));
      break;
    case GenerateRequest::kChat: {
      RETURN_IF_ERROR(ValidateChat(r.chat(), "chat"));
      size_t bytes = 0;
      for (const auto& m : r.chat().messages()) bytes += m.content().size();
      RETURN_IF_ERROR(CheckPromptBytes("chat.messages[*].content together", bytes, limits));
      break;
    }
    case GenerateRequest::INPUT_NOT_SET:
      if (!flat_ids) {
        return Invalid("prompt is empty: set prompt, prompt_tokens, chat or prompt_token_ids");
      }
      break;
  }
  if (flat_ids && r.input_case() != GenerateRequest::INPUT_NOT_SET) {
    return Invalid("prompt_token_ids is set together with another input; set only one of "
                   "prompt, prompt_tokens, chat, prompt_token_ids");
  }
  RETURN_IF_ERROR(CheckTokenIds("prompt_token_ids", r.prompt_token_ids(), limits.vocab_size));

  if (r.max_tokens() > static_cast<uint32_t>(limits.context_length)) {
    return Invalid(absl::StrFormat(
        "max_tokens is %u; allowed [0, %d] (the context length, prompt included)",
        r.max_tokens(), limits.context_length));
  }
  if (r.has_sampling()) RETURN_IF_ERROR(CheckSampling(r.sampling(), limits));

  if (r.stop_size() > kMaxStopStrings) {
    return Invalid(absl::StrFormat("stop has %d strings; at most %d allowed", r.stop_size(),
                                   kMaxStopStrings));
  }
  for (int i = 0; i < r.stop_size(); ++i) {
    if (r.stop(i).empty()) return Invalid(absl::StrFormat("stop[%d] is empty", i));
    if (r.stop(i).size() > static_cast<size_t>(kMaxStopStringBytes)) {
      return Invalid(absl::StrFormat("stop[%d] has %d bytes; at most %d allowed", i,
                                     r.stop(i).size(), kMaxStopStringBytes));
    }
  }
  if (r.stop_token_ids_size() > kMaxStopTokenIds) {
    return Invalid(absl::StrFormat("stop_token_ids has %d ids; at most %d allowed",
                                   r.stop_token_ids_size(), kMaxStopTokenIds));
  }
  RETURN_IF_ERROR(CheckTokenIds("stop_token_ids", r.stop_token_ids(), limits.vocab_size));

  if (r.top_logprobs() > static_cast<uint32_t>(kMaxTopLogprobs)) {
    return Invalid(absl::StrFormat("top_logprobs is %u; allowed [0, %d]", r.top_logprobs(),
                                   kMaxTopLogprobs));
  }
  if (r.top_logprobs() > 0 && !r.include_logprobs()) {
    return Invalid("top_logprobs is set but include_logprobs is false; set include_logprobs");
  }
  if (r.priority() < -kMaxPriority || r.priority() > kMaxPriority) {
    return Invalid(absl::StrFormat("priority is %d; allowed [%d, %d]", r.priority(),
                                   -kMaxPriority, kMaxPriority));
  }
  RETURN_IF_ERROR(CheckKvCache(r.kv_cache(), limits));
  return CheckRequestId(r.request_id());
}

absl::Status ValidatePromptLength(int64_t prompt_tokens, uint32_t max_tokens,
                                  int32_t context_length) {
  if (prompt_tokens <= 0) return Invalid("prompt is empty (it has no tokens)");
  if (prompt_tokens >= context_length) {
    return Invalid(absl::StrFormat("prompt has %d tokens; the context length is %d",
                                   prompt_tokens, context_length));
  }
  if (prompt_tokens + static_cast<int64_t>(max_tokens) > context_length) {
    return Invalid(absl::StrFormat(
        "prompt has %d tokens and max_tokens is %u; together they exceed the context length "
        "%d (max_tokens allowed [0, %d] for this prompt)",
        prompt_tokens, max_tokens, context_length, context_length - prompt_tokens));
  }
  return absl::OkStatus();
}

absl::Status ValidateTokenizeRequest(const v1::TokenizeRequest& r) {
  switch (r.input_case()) {
    case v1::TokenizeRequest::kText:
      return absl::OkStatus();  // empty text tokenizes to [] (or [BOS])
    case v1::TokenizeRequest::kChat:
      return ValidateChat(r.chat(), "chat");
    case v1::TokenizeRequest::INPUT_NOT_SET:
      return Invalid("input is not set: set text or chat");
  }
  return absl::OkStatus();
}

absl::Status ValidateDetokenizeRequest(const v1::DetokenizeRequest& r,
                                       const ModelLimits& limits) {
  return CheckTokenIds("token_ids", r.token_ids(), limits.vocab_size);
}

SamplingParams ToEngineSampling(const v1::SamplingParams& s) {
  SamplingParams out;
  out.temperature = s.temperature();
  out.top_k = static_cast<int32_t>(s.top_k());
  out.top_p = s.top_p() == 0.0f ? 1.0f : s.top_p();
  out.min_p = s.min_p();
  out.repetition_penalty = s.repetition_penalty() == 0.0f ? 1.0f : s.repetition_penalty();
  out.presence_penalty = s.presence_penalty();
  out.frequency_penalty = s.frequency_penalty();
  if (s.has_seed()) out.seed = s.seed();
  return out;
}

std::vector<int32_t> ExplicitPromptTokens(const GenerateRequest& r) {
  if (r.input_case() == GenerateRequest::kPromptTokens) {
    return {r.prompt_tokens().ids().begin(), r.prompt_tokens().ids().end()};
  }
  if (r.input_case() == GenerateRequest::INPUT_NOT_SET) {
    return {r.prompt_token_ids().begin(), r.prompt_token_ids().end()};
  }
  return {};
}

}  // namespace compressd::server
