// --weights presets: named recipes. Group sizes: int4 = g128 (as the common W4A16 setting),
// int3 = g64, int2 = g32 (smaller groups pay for themselves at low bit widths).
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/compress/recipe.h"

namespace compressd {
namespace {

struct Preset {
  const char* name;
  const char* default_format;
  std::vector<RecipeRule> rules;
};

const std::vector<Preset>& Presets() {
  static const std::vector<Preset> p = {
      {"int8", "int8", {}},
      {"w8a8", "w8a8", {}},
      {"int4", "int4-g128", {}},
      {"int4-g64", "int4-g64", {}},
      {"int4-g32", "int4-g32", {}},
      {"int3", "int3-g64", {}},
      {"int2", "int2-g32", {}},
      {"llm-int8", "llm-int8", {}},
      {"spqr3", "spqr3", {}},
      {"spqr4", "spqr4", {}},
      {"mixllm-5", "mixllm-5", {}},
      {"gptq4", "int4-g128+gptq", {}},
      {"quantease4", "int4-g128+quantease", {}},
      {"quantease3", "int3-g64+quantease", {}},
      // Routed to engine/compress/{lowrank,sparse} (validated when those are built).
      {"lowrank-50", "lowrank-0.5", {}},
      {"sparse50", "sparse-50", {}},
      {"2:4", "2:4", {}},
      {"gqsa", "gqsa-50", {}},
  };
  return p;
}

}  // namespace

std::vector<std::string> PresetNames() {
  std::vector<std::string> n;
  for (const auto& p : Presets()) {
    if (ValidateFormatName(p.default_format).ok()) n.push_back(p.name);
  }
  return n;
}

absl::StatusOr<Recipe> PresetRecipe(const std::string& name) {
  for (const auto& p : Presets()) {
    if (name != p.name) continue;
    RETURN_IF_ERROR(ValidateFormatName(p.default_format));
    Recipe r;
    r.name = p.name;
    r.default_format = p.default_format;
    r.rules = p.rules;
    r.wants_calibration = true;
    return r;
  }
  return absl::NotFoundError(absl::StrCat("no preset '", name, "'"));
}

}  // namespace compressd
