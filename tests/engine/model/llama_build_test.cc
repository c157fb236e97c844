// BuildLlamaFamily (engine/model/llama.cc): a tied lm_head is built from a view of the
// embedding table marked TensorView::shared, so LoadModel never rewrites those bytes in place
// for a CPU kernel layout (the embeddings keep reading them); every other view is its
// Linear's alone.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "engine/model/architecture.h"
#include "engine/model/random_model.h"

namespace compressd {
namespace {

std::map<std::string, bool> SharedFlags(bool tied) {
  auto config = RandomShapeConfig("tiny");
  EXPECT_TRUE(config.ok()) << config.status();
  config->tie_word_embeddings = tied;
  auto src = MakeRandomSource(*config, DType::kF32, 1);
  Model model;
  model.config = *config;
  std::map<std::string, bool> shared;
  const LinearFactory factory = [&](const std::string& name, const TensorView& t) {
    shared[name] = t.shared;
    return MakeDenseLinear(t);
  };
  const absl::Status st = LlamaArchitecture().build(*src, factory, &model);
  EXPECT_TRUE(st.ok()) << st;
  return shared;
}

TEST(LlamaBuild, OnlyATiedLmHeadViewsSharedBytes) {
  const std::map<std::string, bool> tied = SharedFlags(true);
  ASSERT_EQ(tied.size(), 2u * 7u + 1u);  // tiny: 2 layers of 7 linears, and the lm_head
  for (const auto& [name, shared] : tied) {
    EXPECT_EQ(shared, name == "lm_head.weight") << name;
  }
  const std::map<std::string, bool> untied = SharedFlags(false);
  ASSERT_EQ(untied.size(), 2u * 7u + 1u);
  for (const auto& [name, shared] : untied) EXPECT_FALSE(shared) << name;
}

}  // namespace
}  // namespace compressd
