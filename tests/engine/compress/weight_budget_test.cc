// --weight-memory-budget (LoadOptions::weight_memory_budget): the loader turns it into the
// `budget:<bytes>` recipe, which picks per-layer formats that fit the linears in the budget.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "engine/compress/recipe.h"
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

// An impossible budget is refused from the layouts' bytes before anything slow runs: here
// before the calibration file is even opened (it does not exist, and that error used to come
// first, after loading a dense copy; on kdocs-7m the refusal took 245 s of GPTQ).
TEST(WeightMemoryBudget, RefusesAnImpossibleBudgetBeforeCalibrating) {
  auto tiny = Load(1000, "auto", ::testing::TempDir() + "/no_such_calibration_file.txt");
  ASSERT_FALSE(tiny.ok());
  EXPECT_EQ(tiny.status().code(), absl::StatusCode::kResourceExhausted) << tiny.status();
  EXPECT_NE(std::string(tiny.status().message()).find("smallest candidate layouts take"), std::string::npos)
      << tiny.status();
}

// What makes that floor a lower bound: a solver suffix never changes a format's bytes.
TEST(WeightMemoryBudget, SolverSuffixesKeepTheLayoutsBytes) {
  std::vector<float> w(96 * 128);
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>((i * 7919) % 1000) / 1000.0f - 0.5f;
  TensorView t;
  t.name = "model.layers.0.mlp.up_proj.weight";
  t.dtype = DType::kF32;
  t.shape = {96, 128};
  t.data = w.data();
  t.bytes = w.size() * sizeof(float);
  for (const char* f : {"int2-g32", "int3-g64", "int4-g64", "int4-g32", "int4-g128"}) {
    auto rtn = CompressTensor(t, f, nullptr, 1);
    ASSERT_TRUE(rtn.ok()) << f << ": " << rtn.status();
    for (const char* solver : {"+gptq", "+quantease"}) {
      auto solved = CompressTensor(t, std::string(f) + solver, nullptr, 1);
      ASSERT_TRUE(solved.ok()) << f << solver << ": " << solved.status();
      EXPECT_EQ(solved->bytes(), rtn->bytes()) << f << solver;
    }
  }
}

}  // namespace
}  // namespace compressd
