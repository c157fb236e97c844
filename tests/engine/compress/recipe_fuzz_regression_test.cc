// Regression (found by tests/fuzz/recipe_fuzz on its first seed, ASan
// stack-use-after-scope in YAML::Node::begin): ParseRecipe iterated `for (... : it->second)`
// where `it->` of a yaml-cpp map iterator is a temporary proxy, so the loop ran over a
// node that had already been destroyed. Any recipe with "candidates" or "rules" hit it;
// release builds usually read the dead stack slot unharmed, ASan builds always fail here.
// Second find (recipe_fuzz, UBSan float-cast-overflow): ParseByteSize converted any
// positive double to uint64_t, so "2222...600MB", "inf" and "nan" were undefined behaviour
// and came back OK with an arbitrary size.
#include <string>
#include <vector>

#include "engine/compress/recipe.h"
#include "gtest/gtest.h"

namespace compressd {
namespace {

TEST(RecipeFuzzRegressionTest, BudgetCandidatesList) {
  auto r = ParseRecipe(R"({"budget": "600MB", "candidates": ["int4-g64", "int8", "bf16"]})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->budget_candidates, (std::vector<std::string>{"int4-g64", "int8", "bf16"}));
}

TEST(RecipeFuzzRegressionTest, RulesListInJsonAndYaml) {
  for (const std::string& text :
       {std::string(R"({"default": "int8", "rules": [{"match": "lm_head.weight", "format": "bf16"},
                    {"match": "model.layers.*.mlp.down_proj.weight", "format": "int4-g32"}]})"),
        std::string("default: int8\nrules:\n  - match: lm_head.weight\n    format: bf16\n"
                    "  - match: \"model.layers.*.mlp.down_proj.weight\"\n    format: int4-g32\n")}) {
    auto r = ParseRecipe(text);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->rules.size(), 2u);
    EXPECT_EQ(r->FormatFor("lm_head.weight"), "bf16");
    EXPECT_EQ(r->FormatFor("model.layers.3.mlp.down_proj.weight"), "int4-g32");
    EXPECT_EQ(r->FormatFor("model.layers.3.self_attn.q_proj.weight"), "int8");
  }
}

TEST(RecipeFuzzRegressionTest, ByteSizeOutOfRangeIsInvalid) {
  for (const char* bad : {"22222222222222222222222600MB", "18446744073709551616", "inf",
                          "infGB", "nan", "-nan", "1e400", "0", "-5MB"}) {
    EXPECT_EQ(ParseBudget(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(ParseRecipe(R"({"budget": "2222222222222222222222600MB"})").status().code(),
            absl::StatusCode::kInvalidArgument);
  auto ok = ParseBudget("600MB");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, 600000000u);
  ok = ParseBudget("1.5GiB");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, 1610612736u);
}

}  // namespace
}  // namespace compressd
