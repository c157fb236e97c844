// --weights presets: named recipes. Group sizes: int4 = g128 (as the common W4A16 setting),
// int3 = g64, int2 = g32 (smaller groups pay for themselves at low bit widths).
//
// Mixed presets (measured on kdocs-7m in docs/QUALITY.md, weights section):
// - The output layer (with tied embeddings also the embedding table) is the most sensitive
//   matrix: on kdocs-7m keeping it at 8 bits cuts KL by ~8x for 0.5 MB of 4.3.
// - down_proj reads the FFN width, often not a multiple of 128 (704 on kdocs-7m): rows are
//   padded to the group size, so g128 stores 768 columns there while g64 stores 704 and is
//   both smaller and finer.
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
      // 4-bit class: int4-g128 + QuantEase, down_proj g64 (no padding), 8-bit output layer.
      {"quantease4-h8",
       "int4-g128+quantease",
       {{"lm_head.weight", "int8"},
        {"model.layers.*.mlp.down_proj.weight", "int4-g64+quantease"}}},
      // 3-bit class: int3-g64 + QuantEase, 4 bits where int3 hurts most per byte (down_proj,
      // and k/v/o, which are small), 8-bit output layer.
      {"quantease3-h8",
       "int3-g64+quantease",
       {{"lm_head.weight", "int8"},
        {"model.layers.*.mlp.down_proj.weight", "int4-g64+quantease"},
        {"model.layers.*.self_attn.[kvo]_proj.weight", "int4-g128+quantease"}}},
      // ~2.5-bit class (llama.cpp Q2_K sizes): int3-g64 + QuantEase, k/v at 4 bits, a 4-bit g32
      // output layer (an 8-bit one alone would be a third of the bytes of a 7M model).
      {"quantease3-h4",
       "int3-g64+quantease",
       {{"lm_head.weight", "int4-g32+quantease"},
        {"model.layers.*.self_attn.[kv]_proj.weight", "int4-g128+quantease"}}},
      // Routed to engine/compress/{lowrank,sparse} (validated when those are built).
      {"lowrank-50", "lowrank-0.5", {}},
      {"sparse50", "sparse-50", {}},
      {"2:4", "2:4", {}},
      {"gqsa", "gqsa-50", {}},
      // Lossless: bf16 with Huffman-coded exponents (~11 bits/weight, engine/compress/dfloat11.h).
      {"df11", "df11", {}},
  };
  return p;
}

// A preset is offered when every format it names is built (low-rank / sparse are optional).
bool PresetValid(const Preset& p) {
  if (!ValidateFormatName(p.default_format).ok()) return false;
  for (const auto& r : p.rules) {
    if (!ValidateFormatName(r.format).ok()) return false;
  }
  return true;
}

}  // namespace

std::vector<std::string> PresetNames() {
  std::vector<std::string> n;
  for (const auto& p : Presets()) {
    if (PresetValid(p)) n.push_back(p.name);
  }
  return n;
}

absl::StatusOr<Recipe> PresetRecipe(const std::string& name) {
  for (const auto& p : Presets()) {
    if (name != p.name) continue;
    RETURN_IF_ERROR(ValidateFormatName(p.default_format));
    for (const auto& rule : p.rules) RETURN_IF_ERROR(ValidateFormatName(rule.format));
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
