// Architecture registry: maps config.json "architectures"/model_type to the function that
// builds ModelWeights from a TensorSource. One file per architecture (llama.cc, qwen2.cc,
// mistral.cc) registers itself in the table in architecture.cc.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "engine/compress/linear.h"
#include "engine/model/model.h"

namespace compressd {

// How each linear layer is materialised (dense view, or compressed by a recipe).
// Called once per linear with the HF tensor name; returns the Linear to use.
using LinearFactory =
    std::function<absl::StatusOr<Linear>(const std::string& name, const TensorView& tensor)>;

struct ArchitectureSpec {
  std::string name;                      // "LlamaForCausalLM"
  std::vector<std::string> model_types;  // "llama", "mistral", ...
  // Fills model->weights from source (model->config already set and validated).
  std::function<absl::Status(const TensorSource& source, const LinearFactory& make_linear,
                             Model* model)>
      build;
};

// NOT_FOUND listing the supported architectures when none matches.
absl::StatusOr<const ArchitectureSpec*> FindArchitecture(const ModelConfig& config);
std::vector<std::string> SupportedArchitectures();

// Architecture entries (defined in their own files).
ArchitectureSpec LlamaArchitecture();
ArchitectureSpec MistralArchitecture();
ArchitectureSpec Qwen2Architecture();

// Shared builder for the Llama family (RMSNorm, RoPE, GQA, SwiGLU, optional qkv bias,
// tied or untied embeddings).
absl::Status BuildLlamaFamily(const TensorSource& source, const LinearFactory& make_linear,
                              bool qkv_bias, Model* model);

}  // namespace compressd
