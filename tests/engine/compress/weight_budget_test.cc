// --weight-memory-budget (LoadOptions::weight_memory_budget): the loader turns it into the
// `budget:<bytes>` recipe, which picks per-layer formats that fit the linears in the budget.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "engine/model/model_loader.h"

namespace compressd {
namespace {

uint64_t LinearBytes(const Model& m) {
  uint64_t b = m.weights.lm_head.bytes();
  for (const LayerWeights& L : m.weights.layers) {
    for (const Linear* l : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down}) b += l->bytes();
  }
  return b;
}

absl::StatusOr<std::shared_ptr<Model>> Load(uint64_t budget, const std::string& weights = "auto",
                                            const std::string& calibration = "") {
  LoadOptions lo;
  lo.calibration_file = calibration;
  lo.model = "random:tiny";
  lo.weights = weights;
  lo.weight_memory_budget = budget;
  lo.threads = 1;
  return LoadModel(lo);
}

TEST(WeightMemoryBudget, FitsTheLinearsInTheBudgetAndUsesMoreBytesWhenGivenMore) {
  auto dense = Load(0, "f32");
  ASSERT_TRUE(dense.ok()) << dense.status();
  const uint64_t f32_bytes = LinearBytes(**dense);
  uint64_t prev = 0;
  for (uint64_t budget : {f32_bytes / 6, f32_bytes / 4, f32_bytes / 3}) {
    auto m = Load(budget);
    ASSERT_TRUE(m.ok()) << budget << ": " << m.status();
    EXPECT_EQ((*m)->weight_recipe, "budget:" + std::to_string(budget));
    const uint64_t bytes = LinearBytes(**m);
    EXPECT_LE(bytes, budget);
    EXPECT_GE(bytes, prev);  // a larger budget never buys a smaller plan
    prev = bytes;
  }
}

// With calibration text the loader first loads a dense copy to record activations; the
// budget must not leak into that load (it did: "leave --weights at auto, not 'f32'").
TEST(WeightMemoryBudget, WorksWithACalibrationFile) {
  const std::string path = ::testing::TempDir() + "/budget_calibration.txt";
  {
    std::ofstream out(path);
    for (int i = 0; i < 50; ++i) out << "the quick brown fox jumps over the lazy dog " << i << "\n";
  }
  auto m = Load(60000, "auto", path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_LE(LinearBytes(**m), 60000u);
}

TEST(WeightMemoryBudget, RefusesAnExplicitWeightsSpecAndAnImpossibleBudget) {
  auto both = Load(100000, "int4");
  ASSERT_FALSE(both.ok());
  EXPECT_EQ(both.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(both.status().message()).find("--weight-memory-budget"), std::string::npos);
  auto tiny = Load(1000);
  ASSERT_FALSE(tiny.ok());
  EXPECT_EQ(tiny.status().code(), absl::StatusCode::kResourceExhausted) << tiny.status();
}

}  // namespace
}  // namespace compressd
