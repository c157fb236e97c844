#include "server/generation_service.h"

#include <utility>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "engine/model/tokenizer.h"
#include "server/generate_call.h"
#include "server/status_map.h"

namespace compressd::server {
namespace {

std::vector<ChatMessage> ToEngineChat(const v1::ChatPrompt& chat) {
  std::vector<ChatMessage> out;
  out.reserve(chat.messages_size());
  for (const v1::ChatMessage& m : chat.messages()) out.push_back({m.role(), m.content()});
  return out;
}

}  // namespace

std::string ToValidUtf8(const std::string& bytes) {
  std::string out;
  out.reserve(bytes.size());
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    size_t len = 0;
    uint32_t min_cp = 0;
    if (c < 0x80) {
      len = 1;
    } else if ((c & 0xe0) == 0xc0) {
      len = 2;
      min_cp = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3;
      min_cp = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4;
      min_cp = 0x10000;
    }
    bool ok = len != 0 && i + len <= n;
    uint32_t cp = len == 1 ? c : (c & (0x7f >> len));
    for (size_t k = 1; ok && k < len; ++k) {
      ok = (p[i + k] & 0xc0) == 0x80;
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    ok = ok && cp >= min_cp && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);
    if (ok) {
      out.append(bytes, i, len);
      i += len;
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD
      i += 1;
    }
  }
  return out;
}

namespace {

double BitsPerParam(uint64_t bytes, uint64_t params) {
  return params == 0 ? 0.0 : 8.0 * static_cast<double>(bytes) / static_cast<double>(params);
}

}  // namespace

GenerationService::GenerationService(Engine* engine, Metrics* metrics)
    : engine_(engine), metrics_(metrics) {
  limits_.vocab_size = engine_->Summary().vocab_size;
  limits_.context_length = engine_->Summary().context_length;
  limits_.kv_cache_codecs = engine_->Summary().kv_cache_request_codecs;
  // Distinguishes generated ids across restarts in aggregated logs.
  id_prefix_ = absl::StrFormat("req-%x-", absl::ToUnixMillis(absl::Now()) & 0xffffff);
}

absl::StatusOr<std::vector<int32_t>> GenerationService::PromptTokens(
    const v1::GenerateRequest& r) const {
  switch (r.input_case()) {
    case v1::GenerateRequest::kPrompt:
      return engine_->Tokenize(r.prompt(),
                               r.has_add_special_tokens() ? r.add_special_tokens() : true);
    case v1::GenerateRequest::kChat:
      return engine_->TokenizeChat(ToEngineChat(r.chat()), r.chat().has_add_generation_prompt()
                                                               ? r.chat().add_generation_prompt()
                                                               : true);
    case v1::GenerateRequest::kPromptTokens:
    case v1::GenerateRequest::INPUT_NOT_SET:
      break;
  }
  return ExplicitPromptTokens(r);
}

absl::StatusOr<GenerationRequest> GenerationService::Prepare(const v1::GenerateRequest& r) {
  RETURN_IF_ERROR(ValidateGenerateRequest(r, limits_));
  GenerationRequest req;
  ASSIGN_OR_RETURN(req.prompt_tokens, PromptTokens(r));
  RETURN_IF_ERROR(ValidatePromptLength(static_cast<int64_t>(req.prompt_tokens.size()),
                                       r.max_tokens(), limits_.context_length));
  req.max_tokens = static_cast<int32_t>(r.max_tokens());
  req.sampling = ToEngineSampling(r.sampling());
  req.stop.assign(r.stop().begin(), r.stop().end());
  req.stop_token_ids.assign(r.stop_token_ids().begin(), r.stop_token_ids().end());
  req.ignore_eos = r.ignore_eos();
  req.top_logprobs = r.include_logprobs() ? static_cast<int32_t>(r.top_logprobs()) : -1;
  req.priority = r.priority();
  req.kv_cache = r.kv_cache();

  if (r.request_id().empty()) {
    req.request_id = absl::StrCat(id_prefix_, next_id_.fetch_add(1));
  } else {
    req.request_id = r.request_id();
  }
  absl::MutexLock lock(&ids_mu_);
  if (!in_flight_ids_.insert(req.request_id).second) {
    return absl::AlreadyExistsError(absl::StrCat(
        "request_id '", req.request_id, "' is already in flight; ids must be unique"));
  }
  return req;
}

void GenerationService::ReleaseId(const std::string& id) {
  absl::MutexLock lock(&ids_mu_);
  in_flight_ids_.erase(id);
}

grpc::ServerWriteReactor<v1::GenerateResponse>* GenerationService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  return GenerateCall::Start(this, context, *request);
}

grpc::ServerUnaryReactor* GenerationService::Tokenize(grpc::CallbackServerContext* context,
                                                      const v1::TokenizeRequest* request,
                                                      v1::TokenizeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Status st = ValidateTokenizeRequest(*request);
  std::vector<int32_t> ids;
  if (st.ok()) {
    if (request->input_case() == v1::TokenizeRequest::kChat) {
      const auto& chat = request->chat();
      auto r = engine_->TokenizeChat(
          ToEngineChat(chat), chat.has_add_generation_prompt() ? chat.add_generation_prompt()
                                                               : true);
      if (r.ok()) {
        ids = std::move(*r);
      } else {
        st = r.status();
      }
    } else {
      ids = engine_->Tokenize(request->text(), request->has_add_special_tokens()
                                                   ? request->add_special_tokens()
                                                   : true);
    }
  }
  if (st.ok()) {
    const Tokenizer& tok = engine_->tokenizer();
    for (int32_t id : ids) {
      response->add_token_ids(static_cast<uint32_t>(id));
      response->add_tokens(tok.Piece(id));
    }
  }
  reactor->Finish(ToGrpcStatus(st));
  return reactor;
}

grpc::ServerUnaryReactor* GenerationService::Detokenize(grpc::CallbackServerContext* context,
                                                        const v1::DetokenizeRequest* request,
                                                        v1::DetokenizeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const absl::Status st = ValidateDetokenizeRequest(*request, limits_);
  if (st.ok()) {
    std::vector<int32_t> ids(request->token_ids().begin(), request->token_ids().end());
    std::string text = engine_->tokenizer().Decode(ids, request->skip_special_tokens());
    // Proto3 strings must be UTF-8; ids can end inside a character or hold stray bytes.
    response->set_text(ToValidUtf8(text));
  }
  reactor->Finish(ToGrpcStatus(st));
  return reactor;
}

grpc::ServerUnaryReactor* GenerationService::GetModelInfo(
    grpc::CallbackServerContext* context, const v1::GetModelInfoRequest* /*request*/,
    v1::ModelInfo* info) {
  const ModelSummary& s = engine_->Summary();
  info->set_model_id(s.model_id);
  info->set_architecture(s.architecture);
  info->set_context_length(static_cast<uint32_t>(s.context_length));
  info->set_vocab_size(static_cast<uint32_t>(s.vocab_size));
  info->set_parameters(s.parameters);
  info->set_weight_bytes(s.weight_bytes);
  info->set_weight_bits_per_param(BitsPerParam(s.weight_bytes, s.parameters));
  for (const TensorGroupStats& g : s.groups) {
    v1::TensorGroupInfo* gi = info->add_tensor_groups();
    gi->set_name(g.name);
    gi->set_format(g.format);
    gi->set_params(g.params);
    gi->set_bytes(g.bytes);
    gi->set_bits_per_param(BitsPerParam(g.bytes, g.params));
  }
  info->set_kv_codec(s.kv_codec);
  info->set_kv_bytes_per_token(s.kv_bytes_per_token);
  info->set_kv_block_size(static_cast<uint32_t>(s.kv_block_size));
  info->set_kv_cache_capacity_tokens(static_cast<uint64_t>(s.kv_capacity_tokens));
  info->set_backend(s.backend);
  info->set_max_batch_tokens(static_cast<uint32_t>(s.max_batch_tokens));
  info->set_max_running_requests(static_cast<uint32_t>(s.max_running));
  for (const std::string& c : s.kv_cache_request_codecs) info->add_kv_cache_request_codecs(c);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace compressd::server
