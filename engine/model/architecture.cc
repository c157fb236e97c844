#include "engine/model/architecture.h"

#include "absl/strings/str_join.h"

namespace compressd {
namespace {

const std::vector<ArchitectureSpec>& Registry() {
  static const std::vector<ArchitectureSpec> r = {LlamaArchitecture(), MistralArchitecture(),
                                                  Qwen2Architecture()};
  return r;
}

}  // namespace

absl::StatusOr<const ArchitectureSpec*> FindArchitecture(const ModelConfig& config) {
  for (const auto& spec : Registry()) {
    if (spec.name == config.architecture) return &spec;
  }
  for (const auto& spec : Registry()) {
    for (const auto& mt : spec.model_types) {
      if (mt == config.model_type) return &spec;
    }
  }
  return absl::NotFoundError(absl::StrCat("unsupported architecture '", config.architecture,
                                          "' (model_type '", config.model_type,
                                          "'); supported: ",
                                          absl::StrJoin(SupportedArchitectures(), ", ")));
}

std::vector<std::string> SupportedArchitectures() {
  std::vector<std::string> out;
  for (const auto& spec : Registry()) out.push_back(spec.name);
  return out;
}

}  // namespace compressd
