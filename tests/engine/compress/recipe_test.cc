// Recipes and presets: parsing (JSON and YAML), first-match-wins rules, error messages that
// name the bad format/glob/preset, byte sizes.
#include "engine/compress/recipe.h"

#include <gtest/gtest.h>

namespace compressd {
namespace {

TEST(RecipeTest, JsonFirstMatchWins) {
  auto r = ParseRecipe(R"({"default": "int4-g64",
    "rules": [{"match": "lm_head.weight", "format": "int8"},
              {"match": "model.layers.*.mlp.*", "format": "int3"},
              {"match": "model.layers.0.*", "format": "w8a8"}]})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->FormatFor("lm_head.weight"), "int8");
  EXPECT_EQ(r->FormatFor("model.layers.0.mlp.up_proj.weight"), "int3");
  EXPECT_EQ(r->FormatFor("model.layers.0.self_attn.q_proj.weight"), "w8a8");
  EXPECT_EQ(r->FormatFor("model.layers.5.self_attn.q_proj.weight"), "int4-g64");
}

TEST(RecipeTest, Yaml) {
  auto r = ParseRecipe("default: int4+gptq\nrules:\n  - match: \"*.down_proj.weight\"\n    format: int8\n");
  // int4+gptq is int4-g128+gptq.
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->FormatFor("model.layers.3.mlp.down_proj.weight"), "int8");
  EXPECT_EQ(r->FormatFor("model.layers.3.mlp.up_proj.weight"), "int4+gptq");
}

TEST(RecipeTest, ErrorsNameTheCulprit) {
  auto a = ParseRecipe(R"({"default": "int5"})");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(a.status().message().find("int5"), std::string::npos);
  auto b = ParseRecipe(R"({"rules": [{"match": "model.[layers", "format": "int8"}]})");
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("model.[layers"), std::string::npos);
  auto c = RecipeFromSpec("int9000");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("int9000"), std::string::npos);
  auto d = ParseRecipe(R"({"defualt": "int8"})");
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("defualt"), std::string::npos);
}

TEST(RecipeTest, PresetsResolve) {
  for (const char* p : {"int8", "w8a8", "int4", "int4-g64", "int4-g32", "int3", "int2", "llm-int8",
                        "spqr3", "spqr4", "mixllm-5", "gptq4", "quantease4", "quantease3"}) {
    auto r = RecipeFromSpec(p);
    ASSERT_TRUE(r.ok()) << p << ": " << r.status();
    EXPECT_TRUE(ValidateFormatName(r->default_format).ok()) << p;
  }
  auto b = RecipeFromSpec("budget:600MB");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->budget_bytes, 600000000u);
}

TEST(RecipeTest, Budgets) {
  // engine/core/byte_size.h's syntax (tests/engine/core/byte_size_test.cc), more than 0.
  EXPECT_EQ(*ParseBudget("4.5MB"), 4500000u);
  EXPECT_EQ(*ParseBudget("2MiB"), 2097152u);
  EXPECT_EQ(*ParseBudget("96Ki"), 98304u);
  EXPECT_EQ(*ParseBudget("123"), 123u);
  EXPECT_FALSE(ParseBudget("lots").ok());
  EXPECT_FALSE(ParseBudget("0").ok());
  EXPECT_FALSE(ParseBudget("0MB").ok());
  EXPECT_EQ(RecipeFromSpec("budget:0").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RecipeFromSpec("budget:1GiB")->budget_bytes, uint64_t{1} << 30);
}

}  // namespace
}  // namespace compressd
