// Request validation: every client-supplied field is checked here, before anything reaches
// the engine. Pure functions of (request, model limits); thread-safe. Errors are
// INVALID_ARGUMENT with a message that names the field and its allowed range, so a client
// can fix its request without reading server logs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "compressd/v1/generation.pb.h"
#include "engine/core/status.h"
#include "engine/engine.h"

namespace compressd::server {

// What the model allows; taken from Engine::Summary().
struct ModelLimits {
  int32_t vocab_size = 0;
  int32_t context_length = 0;
  // Non-empty values GenerateRequest.kv_cache may take (ModelSummary::kv_cache_request_codecs:
  // the server's codec first); empty = only "" is allowed.
  std::vector<std::string> kv_cache_codecs = {};
};

// Limits of the API itself (not of the model).
inline constexpr int kMaxStopStrings = 16;
inline constexpr int kMaxStopStringBytes = 256;
inline constexpr int kMaxStopTokenIds = 64;
inline constexpr int kMaxRequestIdBytes = 128;
inline constexpr int kMaxTopLogprobs = 20;
inline constexpr int kMaxChatMessages = 1024;
inline constexpr int kMaxPriority = 100;

// Checks everything that does not need the tokenizer: input presence, token ids, sampling
// ranges (NaN/inf included), max_tokens against the context, stop lists, logprobs,
// priority, request_id, chat roles, kv_cache against limits.kv_cache_codecs.
absl::Status ValidateGenerateRequest(const v1::GenerateRequest& request,
                                     const ModelLimits& limits);

// After tokenization: the prompt must be non-empty and leave room for max_tokens
// (0 = "up to the context length", which needs at least one free position).
absl::Status ValidatePromptLength(int64_t prompt_tokens, uint32_t max_tokens,
                                  int32_t context_length);

absl::Status ValidateTokenizeRequest(const v1::TokenizeRequest& request);
absl::Status ValidateDetokenizeRequest(const v1::DetokenizeRequest& request,
                                       const ModelLimits& limits);
absl::Status ValidateChat(const v1::ChatPrompt& chat, const char* field);

// Proto sampling (0 = disabled conventions) -> engine sampling. Call after validation.
SamplingParams ToEngineSampling(const v1::SamplingParams& sampling);

// The request's explicit token ids (prompt_tokens or prompt_token_ids); empty for text and
// chat inputs.
std::vector<int32_t> ExplicitPromptTokens(const v1::GenerateRequest& request);

}  // namespace compressd::server
