// ModelConfig: the architecture hyper-parameters of a decoder-only transformer, read from
// Hugging Face config.json or GGUF metadata, validated once (Validate) so that the rest of
// the engine can rely on them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/core/status.h"

namespace compressd {

enum class RopeScalingType : uint8_t { kNone = 0, kLinear = 1, kLlama3 = 2 };

struct RopeScaling {
  RopeScalingType type = RopeScalingType::kNone;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;   // llama3
  float high_freq_factor = 4.0f;  // llama3
  int32_t original_max_position_embeddings = 8192;  // llama3
};

struct ModelConfig {
  std::string architecture;  // registry key, e.g. "LlamaForCausalLM"
  std::string model_type;    // "llama", "mistral", "qwen2"
  int32_t hidden_size = 0;
  int32_t intermediate_size = 0;
  int32_t num_hidden_layers = 0;
  int32_t num_attention_heads = 0;
  int32_t num_key_value_heads = 0;
  int32_t head_dim = 0;  // hidden_size / num_attention_heads unless given
  int32_t vocab_size = 0;
  int32_t max_position_embeddings = 0;
  float rms_norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v biases (Qwen2)
  std::string hidden_act = "silu";
  int32_t bos_token_id = -1;
  int32_t eos_token_id = -1;
  std::vector<int32_t> extra_eos_token_ids;
  int32_t sliding_window = 0;  // 0 = none (Mistral's is ignored at contexts below it)

  int32_t q_dim() const { return num_attention_heads * head_dim; }
  int32_t kv_dim() const { return num_key_value_heads * head_dim; }

  // Checks every field for consistency (positive sizes, heads divide, even head_dim ...);
  // INVALID_ARGUMENT naming the field.
  absl::Status Validate() const;
};

// Parses config.json text. INVALID_ARGUMENT naming the field for missing/ill-typed fields.
absl::StatusOr<ModelConfig> ParseHfConfig(std::string_view json_text);

}  // namespace compressd
