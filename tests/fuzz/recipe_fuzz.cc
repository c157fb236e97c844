// Fuzzes the compression recipe parser (engine/compress/recipe.h): ParseRecipe on JSON or
// YAML text, then FormatFor on typical tensor names; plus the format-name and byte-size
// parsers on the same bytes. RecipeFromSpec is left out: a spec may name a file to read.
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/compress/recipe.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto recipe = compressd::ParseRecipe(text);
  if (recipe.ok()) {
    for (const char* name : {"lm_head.weight", "model.layers.0.mlp.down_proj.weight",
                             "model.layers.11.self_attn.q_proj.weight", "", "*"}) {
      (void)recipe->FormatFor(name);
    }
  }
  (void)compressd::ValidateFormatName(text);
  (void)compressd::ParseBudget(text);  // engine/core/byte_size.h's parser
  return 0;
}
