// The compression recipe shipped in the Kubernetes ConfigMap (deploy/base/recipe.yaml) is one
// the engine accepts: a model loads with it and its linears get the formats it names.
#include "engine/model/model_loader.h"
#include "gtest/gtest.h"
#include "tests/util/test_env.h"

namespace compressd {
namespace {

TEST(DeployRecipe, ConfigMapRecipeLoads) {
  LoadOptions lo;
  lo.model = "random:tiny";
  lo.weights = testing::SourceDir() + "/deploy/base/recipe.yaml";
  auto m = LoadModel(lo);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->weights.layers[0].q.format_name.rfind("int4", 0), 0u)
      << (*m)->weights.layers[0].q.format_name;
  EXPECT_EQ((*m)->weights.lm_head.format_name.rfind("int8", 0), 0u)
      << (*m)->weights.lm_head.format_name;
}

}  // namespace
}  // namespace compressd
