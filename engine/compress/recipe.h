// Recipes: which weight format each linear layer gets, by tensor-name glob (fnmatch syntax,
// first matching rule wins, then the default). Written as JSON or YAML:
//   {"default": "int4-g64+gptq",
//    "rules": [{"match": "lm_head.weight", "format": "int8"},
//              {"match": "model.layers.*.mlp.down_proj.weight", "format": "int4-g32"}]}
// or chosen by preset name (presets.cc), or by a memory budget ("budget:600MB"): per-layer
// formats picked from candidates to fit the bytes with the least estimated output error.
// Formats: those of ParseQuantFormat (quantize.h), and (when built) lowrank-* / sparse-* /
// 2:4 / gqsa routed to engine/compress/{lowrank,sparse}.
//
// Thread-safety: immutable after parsing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/compress/calibration.h"
#include "engine/compress/linear.h"
#include "engine/core/status.h"

namespace compressd {

struct RecipeRule {
  std::string match;   // glob over HF tensor names ("lm_head.weight" for the output layer)
  std::string format;  // a format name (validated when parsed)
};

struct Recipe {
  std::string name;
  std::vector<RecipeRule> rules;
  std::string default_format = "bf16";
  uint64_t budget_bytes = 0;                 // > 0: budget mode
  std::vector<std::string> budget_candidates;  // cheapest first is not required
  bool wants_calibration = false;            // some format benefits from calibration stats

  // The format for a tensor: first matching rule, else default.
  const std::string& FormatFor(const std::string& tensor_name) const;
};

// JSON or YAML text (YAML is a superset: both parse through yaml-cpp if JSON fails).
// INVALID_ARGUMENT naming the bad field / format / glob.
absl::StatusOr<Recipe> ParseRecipe(const std::string& text);

// --weights spec: preset name, "budget:<N>[KB|MB|GB]", a recipe file path (*.json, *.yaml,
// *.yml), or a single format name applied to all linears.
absl::StatusOr<Recipe> RecipeFromSpec(const std::string& spec);

// Names of the presets (for messages and tests).
std::vector<std::string> PresetNames();
absl::StatusOr<Recipe> PresetRecipe(const std::string& name);

// Whether a format name is valid (quant formats, and the routed low-rank / sparse ones).
absl::Status ValidateFormatName(const std::string& format);

// Compresses one tensor into `format` (any valid name), using stats when given.
absl::StatusOr<Linear> CompressTensor(const TensorView& t, const std::string& format,
                                      const ActivationStats* stats, int threads);

// A budget in bytes: engine/core/byte_size.h's syntax ("600MB", "1.5GiB", "123456"), > 0.
absl::StatusOr<uint64_t> ParseBudget(const std::string& text);

}  // namespace compressd
