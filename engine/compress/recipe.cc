#include "engine/compress/recipe.h"

#include <fnmatch.h>

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/compress/quantize.h"
#include "engine/core/byte_size.h"
#include "nlohmann/json.hpp"
#include "yaml-cpp/yaml.h"

#if __has_include("engine/compress/lowrank.h")
#include "engine/compress/lowrank.h"
#define COMPRESSD_HAVE_LOWRANK 1
#endif
#if __has_include("engine/compress/dfloat11.h")
#include "engine/compress/dfloat11.h"
#define COMPRESSD_HAVE_DF11 1
#endif
#if __has_include("engine/compress/sparse.h")
#include "engine/compress/sparse.h"
#define COMPRESSD_HAVE_SPARSE 1
#endif

namespace compressd {
namespace {

bool ValidGlob(const std::string& g) {
  int depth = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    if (g[i] == '\\') {
      ++i;
    } else if (g[i] == '[') {
      ++depth;
    } else if (g[i] == ']' && depth > 0) {
      --depth;
    }
  }
  return depth == 0 && !g.empty();
}

#ifdef COMPRESSD_HAVE_LOWRANK
// lowrank-<ratio>[-int8|-int4][-w] or lowrank-r<rank>...
absl::StatusOr<LowRankParams> ParseLowRank(const std::string& f) {
  LowRankParams p;
  std::string rest = f.substr(8);
  std::vector<std::string> parts;
  size_t pos = 0;
  while (pos <= rest.size()) {
    size_t d = rest.find('-', pos);
    if (d == std::string::npos) d = rest.size();
    parts.push_back(rest.substr(pos, d - pos));
    pos = d + 1;
  }
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string& s = parts[i];
    if (i == 0 && !s.empty() && s[0] == 'r' && absl::SimpleAtoi(s.substr(1), &p.rank) && p.rank > 0) continue;
    if (i == 0 && !s.empty() && s[0] == 'e' && absl::SimpleAtod(s.substr(1), &p.energy)) continue;
    if (i == 0 && absl::SimpleAtod(s, &p.ratio) && p.ratio > 0 && p.ratio <= 1) continue;
    if (s == "int8") { p.factor_bits = 8; continue; }
    if (s == "int4") { p.factor_bits = 4; continue; }
    if (s == "w") { p.weighted = true; continue; }
    return absl::InvalidArgumentError(absl::StrCat("unknown low-rank format '", f, "'"));
  }
  return p;
}
#endif

#ifdef COMPRESSD_HAVE_SPARSE
// sparse-<percent> | 2:4 | gqsa[-<percent>]
absl::StatusOr<SparseParams> ParseSparse(const std::string& f) {
  SparseParams p;
  if (f == "2:4" || f == "sparse-2:4") {
    p.kind = SparseParams::Kind::kTwoFour;
    return p;
  }
  double pct = 50;
  if (absl::StartsWith(f, "gqsa")) {
    p.kind = SparseParams::Kind::kGroup;
    p.bits = 4;
    if (f.size() > 4 && (f[4] != '-' || !absl::SimpleAtod(f.substr(5), &pct))) {
      return absl::InvalidArgumentError(absl::StrCat("unknown sparse format '", f, "'"));
    }
  } else if (absl::StartsWith(f, "sparse-")) {
    if (!absl::SimpleAtod(f.substr(7), &pct)) {
      return absl::InvalidArgumentError(absl::StrCat("unknown sparse format '", f, "'"));
    }
  } else if (f != "sparse") {
    return absl::InvalidArgumentError(absl::StrCat("unknown sparse format '", f, "'"));
  }
  if (pct <= 0 || pct >= 100) {
    return absl::InvalidArgumentError(absl::StrCat("sparsity out of (0,100) in '", f, "'"));
  }
  p.sparsity = pct / 100.0;
  return p;
}
#endif

bool IsLowRank(const std::string& f) { return absl::StartsWith(f, "lowrank-"); }
bool IsSparse(const std::string& f) {
  return f == "sparse" || absl::StartsWith(f, "sparse-") || f == "2:4" || absl::StartsWith(f, "gqsa");
}

}  // namespace

const std::string& Recipe::FormatFor(const std::string& tensor_name) const {
  for (const auto& r : rules) {
    if (fnmatch(r.match.c_str(), tensor_name.c_str(), 0) == 0) return r.format;
  }
  return default_format;
}

absl::Status ValidateFormatName(const std::string& format) {
#ifdef COMPRESSD_HAVE_DF11
  if (IsDf11FormatName(format)) return absl::OkStatus();
#endif
  if (IsLowRank(format)) {
#ifdef COMPRESSD_HAVE_LOWRANK
    return ParseLowRank(format).status();
#else
    return absl::InvalidArgumentError(absl::StrCat("format '", format, "': low-rank not built"));
#endif
  }
  if (IsSparse(format)) {
#ifdef COMPRESSD_HAVE_SPARSE
    return ParseSparse(format).status();
#else
    return absl::InvalidArgumentError(absl::StrCat("format '", format, "': sparse not built"));
#endif
  }
  return ParseQuantFormat(format).status();
}

absl::StatusOr<Linear> CompressTensor(const TensorView& t, const std::string& format,
                                      const ActivationStats* stats, int threads) {
#ifdef COMPRESSD_HAVE_DF11
  if (IsDf11FormatName(format)) return CompressDf11(t);
#endif
#ifdef COMPRESSD_HAVE_LOWRANK
  if (IsLowRank(format)) {
    ASSIGN_OR_RETURN(LowRankParams p, ParseLowRank(format));
    return CompressLowRank(t, p, stats);
  }
#endif
#ifdef COMPRESSD_HAVE_SPARSE
  if (IsSparse(format)) {
    ASSIGN_OR_RETURN(SparseParams p, ParseSparse(format));
    return CompressSparse(t, p, stats);
  }
#endif
  ASSIGN_OR_RETURN(QuantFormatSpec f, ParseQuantFormat(format));
  QuantizeOptions opt;
  opt.threads = threads;
  return QuantizeLinear(t, f, stats, opt);
}

// A budget: ParseByteSize's syntax (engine/core/byte_size.h), and more than zero bytes.
absl::StatusOr<uint64_t> ParseBudget(const std::string& text) {
  ASSIGN_OR_RETURN(const int64_t bytes, ParseByteSize(text));
  if (bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("budget '", text, "' must be more than 0 bytes"));
  }
  return static_cast<uint64_t>(bytes);
}

absl::StatusOr<Recipe> ParseRecipe(const std::string& text) {
  Recipe r;
  r.name = "recipe";
  YAML::Node root;
  try {
    root = YAML::Load(text);  // JSON is YAML
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("recipe: not JSON/YAML: ", e.what()));
  }
  if (!root.IsMap()) return absl::InvalidArgumentError("recipe: top level must be a map");
  try {
    for (auto it = root.begin(); it != root.end(); ++it) {
      const std::string key = it->first.as<std::string>();
      if (key == "default") {
        r.default_format = it->second.as<std::string>();
      } else if (key == "name") {
        r.name = it->second.as<std::string>();
      } else if (key == "budget") {
        ASSIGN_OR_RETURN(r.budget_bytes, ParseBudget(it->second.as<std::string>()));
      } else if (key == "candidates") {
        // it-> is a temporary proxy: iterate over a copy of the node, not a dangling member.
        for (const auto& c : YAML::Node(it->second)) {
          r.budget_candidates.push_back(c.as<std::string>());
        }
      } else if (key == "rules") {
        if (!it->second.IsSequence()) return absl::InvalidArgumentError("recipe: 'rules' must be a list");
        for (const auto& n : YAML::Node(it->second)) {
          if (!n["match"] || !n["format"]) {
            return absl::InvalidArgumentError("recipe: each rule needs 'match' and 'format'");
          }
          r.rules.push_back({n["match"].as<std::string>(), n["format"].as<std::string>()});
        }
      } else {
        return absl::InvalidArgumentError(absl::StrCat("recipe: unknown field '", key, "'"));
      }
    }
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("recipe: ", e.what()));
  }
  for (const auto& rule : r.rules) {
    if (!ValidGlob(rule.match)) {
      return absl::InvalidArgumentError(absl::StrCat("recipe: bad glob '", rule.match, "'"));
    }
    RETURN_IF_ERROR(ValidateFormatName(rule.format));
  }
  RETURN_IF_ERROR(ValidateFormatName(r.default_format));
  for (const auto& c : r.budget_candidates) RETURN_IF_ERROR(ValidateFormatName(c));
  r.wants_calibration = true;
  return r;
}

absl::StatusOr<Recipe> RecipeFromSpec(const std::string& spec) {
  if (absl::StartsWith(spec, "budget:")) {
    Recipe r;
    r.name = spec;
    ASSIGN_OR_RETURN(r.budget_bytes, ParseBudget(spec.substr(7)));
    r.budget_candidates = {"int2-g32+gptq", "int3-g64+gptq", "int4-g64+gptq", "int4-g32+gptq",
                           "int8"};
    r.wants_calibration = true;
    return r;
  }
  if (absl::EndsWith(spec, ".json") || absl::EndsWith(spec, ".yaml") || absl::EndsWith(spec, ".yml")) {
    std::ifstream in(spec);
    if (!in) return absl::InvalidArgumentError(absl::StrCat("--weights: cannot read recipe '", spec, "'"));
    std::stringstream ss;
    ss << in.rdbuf();
    return ParseRecipe(ss.str());
  }
  auto preset = PresetRecipe(spec);
  if (preset.ok()) return preset;
  if (ValidateFormatName(spec).ok()) {
    Recipe r;
    r.name = spec;
    r.default_format = spec;
    r.wants_calibration = true;
    return r;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown --weights preset/format '", spec,
                                                 "'; presets: ", absl::StrJoin(PresetNames(), ", "),
                                                 "; or budget:<bytes>, a recipe .json/.yaml, or a "
                                                 "format name"));
}

}  // namespace compressd
