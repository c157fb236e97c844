#include "engine/model/config.h"

#include <cmath>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace compressd {
namespace {

using nlohmann::json;

absl::Status FieldError(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("config.json: ", field, " ", what));
}

// Integer field in [lo, hi]. Absent: `fallback` when given, else an error.
absl::Status GetInt(const json& j, const char* field, int64_t lo, int64_t hi, int32_t* out,
                    bool required) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) {
    return required ? FieldError(field, "is missing") : absl::OkStatus();
  }
  if (!it->is_number_integer()) {
    // 5.0 in a config is common enough to accept when integral.
    if (it->is_number_float()) {
      const double d = it->get<double>();
      if (std::isfinite(d) && d == std::floor(d) && d >= static_cast<double>(lo) &&
          d <= static_cast<double>(hi)) {
        *out = static_cast<int32_t>(d);
        return absl::OkStatus();
      }
    }
    return FieldError(field, "must be an integer");
  }
  int64_t v = 0;
  if (it->is_number_unsigned()) {
    const uint64_t u = it->get<uint64_t>();
    if (u > static_cast<uint64_t>(hi))
      return FieldError(field, absl::StrCat("= ", u, " is out of range"));
    v = static_cast<int64_t>(u);
  } else {
    v = it->get<int64_t>();
  }
  if (v < lo || v > hi) {
    return FieldError(field, absl::StrCat("= ", v, " is out of range [", lo, ", ", hi, "]"));
  }
  *out = static_cast<int32_t>(v);
  return absl::OkStatus();
}

absl::Status GetFloat(const json& j, const char* field, float* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) return FieldError(field, "must be a number");
  const double d = it->get<double>();
  if (!std::isfinite(d) || std::fabs(d) > std::numeric_limits<float>::max()) {
    return FieldError(field, "must be finite");
  }
  *out = static_cast<float>(d);
  return absl::OkStatus();
}

absl::Status GetBool(const json& j, const char* field, bool* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) return FieldError(field, "must be a boolean");
  *out = it->get<bool>();
  return absl::OkStatus();
}

absl::Status GetString(const json& j, const char* field, std::string* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string()) return FieldError(field, "must be a string");
  *out = it->get<std::string>();
  return absl::OkStatus();
}

absl::Status ParseRopeScaling(const json& rs, RopeScaling* out) {
  if (rs.is_null()) return absl::OkStatus();
  if (!rs.is_object()) return FieldError("rope_scaling", "must be an object or null");
  std::string type;
  for (const char* key : {"rope_type", "type"}) {
    auto it = rs.find(key);
    if (it != rs.end() && !it->is_null()) {
      if (!it->is_string())
        return FieldError(absl::StrCat("rope_scaling.", key), "must be a string");
      type = it->get<std::string>();
      break;
    }
  }
  if (type.empty()) return FieldError("rope_scaling.type", "is missing");
  if (type == "default") return absl::OkStatus();
  if (type == "linear") {
    out->type = RopeScalingType::kLinear;
  } else if (type == "llama3") {
    out->type = RopeScalingType::kLlama3;
  } else {
    return FieldError("rope_scaling.type",
                      absl::StrCat("'", type, "' is not supported (linear, llama3)"));
  }
  auto sub = [](const char* k) { return absl::StrCat("rope_scaling.", k); };
  auto get = [&](const char* k, float* v, bool required) -> absl::Status {
    auto it = rs.find(k);
    if (it == rs.end() || it->is_null()) {
      return required ? FieldError(sub(k), "is missing") : absl::OkStatus();
    }
    if (!it->is_number()) return FieldError(sub(k), "must be a number");
    const double d = it->get<double>();
    if (!std::isfinite(d) || d <= 0 || d > 1e6) return FieldError(sub(k), "must be in (0, 1e6]");
    *v = static_cast<float>(d);
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(get("factor", &out->factor, true));
  if (out->type == RopeScalingType::kLlama3) {
    RETURN_IF_ERROR(get("low_freq_factor", &out->low_freq_factor, false));
    RETURN_IF_ERROR(get("high_freq_factor", &out->high_freq_factor, false));
    auto it = rs.find("original_max_position_embeddings");
    if (it != rs.end() && !it->is_null()) {
      if (!it->is_number_integer() || it->get<int64_t>() <= 0 || it->get<int64_t>() > (1 << 24)) {
        return FieldError(sub("original_max_position_embeddings"), "must be a positive integer");
      }
      out->original_max_position_embeddings = static_cast<int32_t>(it->get<int64_t>());
    }
  }
  return absl::OkStatus();
}

absl::Status ParseEos(const json& j, ModelConfig* c) {
  auto it = j.find("eos_token_id");
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  auto one = [](const json& v, int32_t* out) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX) {
      return false;
    }
    *out = static_cast<int32_t>(v.get<int64_t>());
    return true;
  };
  if (it->is_array()) {
    for (size_t i = 0; i < it->size(); ++i) {
      int32_t id = 0;
      if (!one((*it)[i], &id)) {
        return FieldError(absl::StrCat("eos_token_id[", i, "]"), "must be a token id");
      }
      if (i == 0) {
        c->eos_token_id = id;
      } else {
        c->extra_eos_token_ids.push_back(id);
      }
    }
    return absl::OkStatus();
  }
  if (!one(*it, &c->eos_token_id))
    return FieldError("eos_token_id", "must be a token id or a list");
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ParseJson(const json& j) {
  if (!j.is_object()) return FieldError("(top level)", "must be a JSON object");
  ModelConfig c;
  RETURN_IF_ERROR(GetString(j, "model_type", &c.model_type));
  if (c.model_type.empty()) return FieldError("model_type", "is missing");
  if (c.model_type != "llama" && c.model_type != "mistral" && c.model_type != "qwen2") {
    return FieldError("model_type", absl::StrCat("'", c.model_type,
                                                 "' is not supported (llama, mistral, qwen2)"));
  }
  auto arch = j.find("architectures");
  if (arch != j.end() && !arch->is_null()) {
    if (!arch->is_array() || arch->empty() || !(*arch)[0].is_string()) {
      return FieldError("architectures", "must be a non-empty list of strings");
    }
    c.architecture = (*arch)[0].get<std::string>();
  } else if (c.model_type == "llama") {
    c.architecture = "LlamaForCausalLM";
  } else if (c.model_type == "mistral") {
    c.architecture = "MistralForCausalLM";
  } else {
    c.architecture = "Qwen2ForCausalLM";
  }
  constexpr int64_t kMax = 1 << 24;
  RETURN_IF_ERROR(GetInt(j, "hidden_size", 1, kMax, &c.hidden_size, true));
  RETURN_IF_ERROR(GetInt(j, "intermediate_size", 1, kMax, &c.intermediate_size, true));
  RETURN_IF_ERROR(GetInt(j, "num_hidden_layers", 1, 4096, &c.num_hidden_layers, true));
  RETURN_IF_ERROR(GetInt(j, "num_attention_heads", 1, 4096, &c.num_attention_heads, true));
  c.num_key_value_heads = c.num_attention_heads;
  RETURN_IF_ERROR(GetInt(j, "num_key_value_heads", 1, 4096, &c.num_key_value_heads, false));
  RETURN_IF_ERROR(GetInt(j, "vocab_size", 1, INT32_MAX, &c.vocab_size, true));
  c.head_dim = c.hidden_size / c.num_attention_heads;
  RETURN_IF_ERROR(GetInt(j, "head_dim", 1, 65536, &c.head_dim, false));
  c.max_position_embeddings = 2048;
  RETURN_IF_ERROR(
      GetInt(j, "max_position_embeddings", 1, INT32_MAX, &c.max_position_embeddings, false));
  RETURN_IF_ERROR(GetFloat(j, "rms_norm_eps", &c.rms_norm_eps));
  RETURN_IF_ERROR(GetFloat(j, "rope_theta", &c.rope_theta));
  RETURN_IF_ERROR(GetBool(j, "tie_word_embeddings", &c.tie_word_embeddings));
  c.attention_bias = c.model_type == "qwen2";
  RETURN_IF_ERROR(GetBool(j, "attention_bias", &c.attention_bias));
  RETURN_IF_ERROR(GetString(j, "hidden_act", &c.hidden_act));
  RETURN_IF_ERROR(GetInt(j, "bos_token_id", 0, INT32_MAX, &c.bos_token_id, false));
  RETURN_IF_ERROR(ParseEos(j, &c));
  // Qwen2 writes sliding_window even when use_sliding_window is false.
  bool use_sw = c.model_type != "qwen2";
  RETURN_IF_ERROR(GetBool(j, "use_sliding_window", &use_sw));
  if (use_sw) RETURN_IF_ERROR(GetInt(j, "sliding_window", 0, INT32_MAX, &c.sliding_window, false));
  auto rs = j.find("rope_scaling");
  if (rs != j.end()) RETURN_IF_ERROR(ParseRopeScaling(*rs, &c.rope_scaling));
  return c;
}

}  // namespace

absl::Status ModelConfig::Validate() const {
  auto bad = [](absl::string_view field, absl::string_view what) {
    return FieldError(field, what);
  };
  if (hidden_size <= 0) return bad("hidden_size", "must be positive");
  if (intermediate_size <= 0) return bad("intermediate_size", "must be positive");
  if (num_hidden_layers <= 0) return bad("num_hidden_layers", "must be positive");
  if (num_attention_heads <= 0) return bad("num_attention_heads", "must be positive");
  if (num_key_value_heads <= 0) return bad("num_key_value_heads", "must be positive");
  if (num_attention_heads % num_key_value_heads != 0) {
    return bad("num_key_value_heads",
               absl::StrCat("= ", num_key_value_heads,
                            " must divide num_attention_heads = ", num_attention_heads));
  }
  if (head_dim <= 0) return bad("head_dim", "must be positive");
  if (head_dim % 2 != 0) return bad("head_dim", absl::StrCat("= ", head_dim, " must be even"));
  if (static_cast<int64_t>(num_attention_heads) * head_dim > (1 << 24)) {
    return bad("head_dim", "num_attention_heads * head_dim is too large");
  }
  if (vocab_size <= 0) return bad("vocab_size", "must be positive");
  if (max_position_embeddings <= 0) return bad("max_position_embeddings", "must be positive");
  if (!(rms_norm_eps > 0.0f) || !std::isfinite(rms_norm_eps)) {
    return bad("rms_norm_eps", "must be positive");
  }
  if (!(rope_theta > 0.0f) || !std::isfinite(rope_theta)) {
    return bad("rope_theta", "must be positive");
  }
  if (rope_scaling.type != RopeScalingType::kNone && !(rope_scaling.factor > 0.0f)) {
    return bad("rope_scaling.factor", "must be positive");
  }
  if (rope_scaling.type == RopeScalingType::kLlama3) {
    if (!(rope_scaling.low_freq_factor > 0.0f) ||
        !(rope_scaling.high_freq_factor > rope_scaling.low_freq_factor)) {
      return bad("rope_scaling.high_freq_factor", "must exceed low_freq_factor > 0");
    }
    if (rope_scaling.original_max_position_embeddings <= 0) {
      return bad("rope_scaling.original_max_position_embeddings", "must be positive");
    }
  }
  if (hidden_act != "silu" && hidden_act != "swish") {
    return bad("hidden_act", absl::StrCat("'", hidden_act, "' is not supported (silu)"));
  }
  if (bos_token_id >= vocab_size) return bad("bos_token_id", "is outside the vocabulary");
  if (eos_token_id >= vocab_size) return bad("eos_token_id", "is outside the vocabulary");
  for (int32_t id : extra_eos_token_ids) {
    if (id < 0 || id >= vocab_size)
      return bad("eos_token_id", "lists an id outside the vocabulary");
  }
  if (sliding_window < 0) return bad("sliding_window", "must be non-negative");
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ParseHfConfig(std::string_view json_text) {
  try {
    json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return FieldError("(document)", "is not valid JSON");
    return ParseJson(j);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: ", e.what()));
  }
}

}  // namespace compressd
