// The CompressionFactoryMaker for --weights specs other than auto/f32/f16/bf16: parses the
// spec into a Recipe, collects calibration statistics when --calibration-file is given (by
// loading the checkpoint dense and running it on the text), plans budget mode, and returns a
// LinearFactory that compresses each linear by its rule.
#include "engine/compress/register.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/compress/calibration.h"
#include "engine/compress/quantize.h"
#include "engine/compress/recipe.h"
#include "engine/model/model_loader.h"

namespace compressd {
namespace {

bool IsLinearName(const std::string& n) {
  return n == "lm_head.weight" ||
         (n.rfind("model.layers.", 0) == 0 && n.size() > 7 && n.compare(n.size() - 7, 7, ".weight") == 0 &&
          (n.find("_proj.") != std::string::npos));
}

std::vector<std::string> BudgetLinearNames(const TensorSource& src, bool tied) {
  std::vector<std::string> names;
  for (const auto& n : src.Names()) {
    if (IsLinearName(n)) names.push_back(n);
  }
  if (tied && !src.Has("lm_head.weight")) names.push_back("lm_head.weight");
  return names;
}

absl::StatusOr<TensorView> BudgetTensor(const TensorSource& src, const std::string& n, bool tied) {
  return src.Get(n == "lm_head.weight" && tied && !src.Has(n) ? "model.embed_tokens.weight" : n);
}

// A candidate's bytes when they follow from the tensor's shape alone, with a quick way to get
// them: dense, int8 rows, w8a8 and int{2,3,4}-g layouts, whose +gptq / +quantease solvers
// change the codes but never the layout, so round-to-nearest (milliseconds) gives the same
// bytes. Formats with data-dependent sizes (outliers, mixed bits, low rank, sparsity) have
// none: nullopt.
std::optional<std::string> QuickLayoutTwin(const std::string& format) {
  auto spec = ParseQuantFormat(format);
  if (!spec.ok()) return std::nullopt;
  using F = QuantFormatSpec::Family;
  if (spec->family != F::kDense && spec->family != F::kInt8Row && spec->family != F::kW8A8 &&
      spec->family != F::kGroup) {
    return std::nullopt;
  }
  std::string twin = format;
  for (const std::string suffix : {"+gptq", "+quantease"}) {
    if (absl::EndsWith(twin, suffix)) twin.resize(twin.size() - suffix.size());
  }
  return twin;
}

// Before calibrating or running any solver: a lower bound on the plan's bytes from the
// layouts alone (a tensor whose every candidate has a quick twin adds its smallest; any other
// adds 0). A budget below it cannot be met, and saying so took minutes of GPTQ before.
absl::Status CheckBudgetFloor(const Recipe& r, const TensorSource& src, bool tied, int threads) {
  std::vector<std::string> twins;
  for (const auto& f : r.budget_candidates) {
    std::optional<std::string> t = QuickLayoutTwin(f);
    if (!t) return absl::OkStatus();  // no lower bound better than 0 for any tensor
    twins.push_back(*t);
  }
  uint64_t floor = 0;
  for (const auto& n : BudgetLinearNames(src, tied)) {
    ASSIGN_OR_RETURN(TensorView t, BudgetTensor(src, n, tied));
    if (t.shape.size() != 2) continue;
    uint64_t least = UINT64_MAX;
    for (const auto& f : twins) {
      ASSIGN_OR_RETURN(Linear l, CompressTensor(t, f, nullptr, threads));
      least = std::min<uint64_t>(least, l.bytes());
    }
    floor += least;
  }
  if (floor > r.budget_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "weight budget ", r.budget_bytes, " bytes is below the smallest plan: the linears' ",
        "smallest candidate layouts take ", floor, " bytes"));
  }
  return absl::OkStatus();
}

// Budget mode: every linear starts at its cheapest candidate; then repeatedly the upgrade with
// the best (error decrease / extra bytes) is taken while it fits. Error = absolute layer
// output error tr(E H E^T) (relative error times tr(W H W^T)), measured on the real weights.
absl::StatusOr<std::map<std::string, std::string>> PlanBudget(
    const Recipe& r, const TensorSource& src, const CalibrationData* calib, bool tied, int threads) {
  struct Option {
    std::string format;
    uint64_t bytes;
    double err;
  };
  std::map<std::string, std::vector<Option>> opts;
  uint64_t fixed = 0;
  for (const auto& n : BudgetLinearNames(src, tied)) {
    ASSIGN_OR_RETURN(TensorView t, BudgetTensor(src, n, tied));
    if (t.shape.size() != 2) continue;
    ASSIGN_OR_RETURN(std::vector<float> w, TensorToF32(t));
    const ActivationStats* st = calib ? calib->ForLinear(n) : nullptr;
    double base = 0;  // tr(W H W^T) ~ scale of the layer's output
    for (int64_t i = 0; i < static_cast<int64_t>(w.size()); ++i) {
      const int64_t c = i % t.shape[1];
      base += static_cast<double>(w[i]) * w[i] * (st ? st->MeanSq(c) : 1.0);
    }
    std::vector<Option>& o = opts[n];
    for (const auto& f : r.budget_candidates) {
      ASSIGN_OR_RETURN(Linear l, CompressTensor(t, f, st, threads));
      o.push_back({f, l.bytes(), LayerError(l, w, st) * base});
    }
    std::sort(o.begin(), o.end(), [](const Option& a, const Option& b) { return a.bytes < b.bytes; });
    std::fprintf(stderr, "budget: measured %s\n", n.c_str());
  }
  std::map<std::string, size_t> pick;
  uint64_t total = fixed;
  for (auto& [n, o] : opts) {
    pick[n] = 0;
    total += o[0].bytes;
  }
  if (total > r.budget_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("weight budget ", r.budget_bytes,
                                                     " bytes is below the smallest plan (", total,
                                                     " bytes of linears)"));
  }
  for (;;) {
    double best = 0;
    std::string best_n;
    size_t best_i = 0;
    for (auto& [n, o] : opts) {
      const Option& cur = o[pick[n]];
      for (size_t i = pick[n] + 1; i < o.size(); ++i) {
        const uint64_t extra = o[i].bytes - cur.bytes;
        if (total + extra > r.budget_bytes || o[i].err >= cur.err) continue;
        const double gain = (cur.err - o[i].err) / std::max<uint64_t>(extra, 1);
        if (gain > best) {
          best = gain;
          best_n = n;
          best_i = i;
        }
      }
    }
    if (best_n.empty()) break;
    total += opts[best_n][best_i].bytes - opts[best_n][pick[best_n]].bytes;
    pick[best_n] = best_i;
  }
  std::map<std::string, std::string> plan;
  for (auto& [n, o] : opts) plan[n] = o[pick[n]].format;
  std::fprintf(stderr, "budget: planned %llu bytes of linears (budget %llu)\n",
               static_cast<unsigned long long>(total), static_cast<unsigned long long>(r.budget_bytes));
  return plan;
}

absl::StatusOr<LinearFactory> MakeFactory(const std::string& spec, const LoadOptions& options,
                                          const Model& partial) {
  ASSIGN_OR_RETURN(Recipe recipe, RecipeFromSpec(spec));
  if (recipe.budget_bytes > 0) {
    RETURN_IF_ERROR(CheckBudgetFloor(recipe, *partial.source, partial.config.tie_word_embeddings,
                                     options.threads));
  }
  std::shared_ptr<CalibrationData> calib;
  if (!options.calibration_file.empty()) {
    const auto t0 = std::chrono::steady_clock::now();
    LoadOptions dense = options;
    dense.weights = "f32";
    dense.progress = nullptr;
    ASSIGN_OR_RETURN(std::shared_ptr<Model> m, LoadModel(dense));
    CalibrationOptions co;
    co.text_file = options.calibration_file;
    co.threads = options.threads;
    ASSIGN_OR_RETURN(std::unique_ptr<CalibrationData> cd, CalibrationData::Collect(*m, co));
    calib = std::move(cd);
    std::fprintf(stderr, "calibration: %lld tokens from %s in %.1f s\n",
                 static_cast<long long>(calib->tokens()), options.calibration_file.c_str(),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  auto plan = std::make_shared<std::map<std::string, std::string>>();
  if (recipe.budget_bytes > 0) {
    ASSIGN_OR_RETURN(*plan, PlanBudget(recipe, *partial.source, calib.get(),
                                       partial.config.tie_word_embeddings, options.threads));
  }
  auto rec = std::make_shared<Recipe>(std::move(recipe));
  const int threads = options.threads;
  return LinearFactory([rec, calib, plan, threads](const std::string& name,
                                                   const TensorView& t) -> absl::StatusOr<Linear> {
    auto it = plan->find(name);
    const std::string& format = it != plan->end() ? it->second : rec->FormatFor(name);
    const ActivationStats* st = calib ? calib->ForLinear(name) : nullptr;
    auto l = CompressTensor(t, format, st, threads);
    if (!l.ok()) {
      return absl::Status(l.status().code(), absl::StrCat(name, ": ", l.status().message()));
    }
    return l;
  });
}

}  // namespace

void RegisterBuiltinCompression() {
  static std::once_flag once;
  std::call_once(once, [] { RegisterCompressionFactoryMaker(MakeFactory); });
}

namespace {
// Also registers at start-up when this object is linked in.
const bool kRegistered = (RegisterBuiltinCompression(), true);
}  // namespace

}  // namespace compressd
