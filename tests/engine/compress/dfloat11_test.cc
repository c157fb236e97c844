// The "df11" weight format in the engine (engine/compress/dfloat11.h): on-load packing from
// bf16 (bit for bit) and fp32 (its bf16 rounding) tensors, the format name in recipes and
// presets, a real model loaded with --weights df11 giving logits bit-identical to --weights
// bf16, and a compressed checkpoint of df11 linears saving, reloading (validated) and
// rejecting corruption.
#include "engine/compress/dfloat11.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <random>
#include <vector>

#include "engine/compress/checkpoint_io.h"
#include "engine/compress/recipe.h"
#include "engine/model/model_loader.h"
#include "gtest/gtest.h"
#include "kernels/gemm.h"
#include "kernels/types.h"
#include "tests/util/model_logits.h"
#include "tests/util/test_env.h"

namespace compressd {
namespace {

TensorView View(const void* data, DType dt, int64_t rows, int64_t cols) {
  TensorView t;
  t.name = "w";
  t.dtype = dt;
  t.shape = {rows, cols};
  t.data = data;
  t.bytes = static_cast<size_t>(rows * cols) * kernels::DTypeSize(dt);
  return t;
}

TEST(Df11Engine, Bf16TensorIsKeptBitForBit) {
  std::mt19937 rng(1);
  const int64_t rows = 33, cols = 70;
  std::vector<uint16_t> w(static_cast<size_t>(rows * cols));
  for (auto& v : w) v = static_cast<uint16_t>(rng());
  w[0] = 0x7fc1;  // a NaN payload
  w[1] = 0x8000;  // -0
  auto l = CompressTensor(View(w.data(), DType::kBF16, rows, cols), "df11", nullptr, 1);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->format_name, "df11");
  EXPECT_EQ(kernels::ValidateDf11(l->w), "");
  std::vector<float> f(w.size());
  kernels::DequantizeRows(l->w, 0, rows, f.data());
  for (size_t i = 0; i < w.size(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, &f[i], 4);
    ASSERT_EQ(bits, static_cast<uint32_t>(w[i]) << 16) << i;
  }
}

TEST(Df11Engine, F32TensorIsItsBf16Rounding) {
  std::mt19937 rng(2);
  std::normal_distribution<float> d(0.0f, 0.02f);
  const int64_t rows = 16, cols = 300;
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (float& v : w) v = d(rng);
  auto l = CompressTensor(View(w.data(), DType::kF32, rows, cols), "df11", nullptr, 1);
  ASSERT_TRUE(l.ok()) << l.status();
  std::vector<float> f(w.size());
  kernels::DequantizeRows(l->w, 0, rows, f.data());
  for (size_t i = 0; i < w.size(); ++i) {
    ASSERT_EQ(kernels::F32ToBF16(f[i]), kernels::F32ToBF16(w[i])) << i;
    ASSERT_EQ(f[i], kernels::BF16ToF32(kernels::F32ToBF16(w[i]))) << i;
  }
  // Trained-like weights: well under the 16 bits of bf16.
  EXPECT_LT(static_cast<double>(l->bytes()) / (rows * cols), 1.6);

  TensorView bad = View(w.data(), DType::kF32, rows, cols);
  bad.shape = {rows * cols};
  EXPECT_EQ(CompressTensor(bad, "df11", nullptr, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(Df11Engine, FormatNameInRecipesAndPresets) {
  EXPECT_TRUE(ValidateFormatName("df11").ok());
  EXPECT_FALSE(ValidateFormatName("df12").ok());
  auto r = RecipeFromSpec("df11");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->FormatFor("model.layers.0.mlp.up_proj.weight"), "df11");
  EXPECT_EQ(r->FormatFor("lm_head.weight"), "df11");
  auto mixed = ParseRecipe(
      R"({"default": "int4-g64", "rules": [{"match": "lm_head.weight", "format": "df11"}]})");
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  EXPECT_EQ(mixed->FormatFor("lm_head.weight"), "df11");
  const std::vector<std::string> names = PresetNames();
  EXPECT_NE(std::find(names.begin(), names.end(), "df11"), names.end());
}

std::shared_ptr<Model> Load(const std::string& dir, const std::string& weights) {
  LoadOptions lo;
  lo.model = dir;
  lo.weights = weights;
  lo.threads = 2;
  auto m = LoadModel(lo);
  EXPECT_TRUE(m.ok()) << weights << ": " << m.status();
  return m.ok() ? *m : nullptr;
}

// df11 decodes to exactly the bf16 weights and multiplies them with the dense bf16 kernel.
TEST(Df11Engine, Kdocs7mLogitsIdenticalToBf16) {
  REQUIRE_SHARED(dir, "models/kdocs-7m");
  auto bf16 = Load(dir, "bf16");
  auto df11 = Load(dir, "df11");
  ASSERT_TRUE(bf16 && df11);
  EXPECT_EQ(df11->weights.layers[2].up.format_name, "df11");
  EXPECT_EQ(df11->weights.lm_head.format_name, "df11");
  EXPECT_LT(df11->WeightBytes(), bf16->WeightBytes() * 3 / 4);
  const std::vector<int32_t> toks = {1, 450, 3012, 77, 1999, 5, 8, 4000, 12, 99};
  EXPECT_EQ(testing::PrefillLogits(df11, toks), testing::PrefillLogits(bf16, toks));
}

std::string TempDir(const std::string& tag) {
  std::string d = ::testing::TempDir() + "compressd_df11_" + tag + "_" + std::to_string(::getpid());
  ::mkdir(d.c_str(), 0755);
  return d;
}

TEST(Df11Engine, CheckpointSavesReloadsAndRejectsCorruption) {
  REQUIRE_SHARED(dir, "models/kdocs-7m");
  auto m = Load(dir, "df11");
  ASSERT_TRUE(m);
  const std::vector<int32_t> toks = {1, 450, 3012, 77, 1999, 5};
  const std::vector<float> want = testing::PrefillLogits(m, toks);
  const std::string out = TempDir("ckpt");
  ASSERT_TRUE(SaveCompressedCheckpoint(*m, out, dir).ok());
  auto back = Load(out, "auto");
  ASSERT_TRUE(back);
  EXPECT_EQ(back->weights.layers[3].down.format_name, "df11");
  EXPECT_EQ(back->WeightBytes(), m->WeightBytes());
  EXPECT_EQ(testing::PrefillLogits(back, toks), want);

  // Corrupt the stored code lengths of one linear: validation names it.
  const std::string st = out + "/model.safetensors";
  const std::string good = testing::ReadFileOrDie(st);
  const std::string key = "\"model.layers.0.self_attn.q_proj.weight.aux2\"";
  const size_t at = good.find(key);
  ASSERT_NE(at, std::string::npos);
  uint64_t header_len;
  std::memcpy(&header_len, good.data(), 8);
  const size_t offs = good.find("\"data_offsets\":[", at);
  ASSERT_NE(offs, std::string::npos);
  const uint64_t begin = std::stoull(good.substr(offs + 16));
  std::string bad = good;
  for (int i = 0; i < 256; ++i) bad[8 + header_len + begin + i] = 1;  // 256 codes of 1 bit
  std::ofstream(st, std::ios::binary | std::ios::trunc) << bad;
  LoadOptions lo;
  lo.model = out;
  const absl::Status s = LoadModel(lo).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("q_proj"), std::string::npos) << s;
  std::ofstream(st, std::ios::binary | std::ios::trunc) << good;
  EXPECT_TRUE(LoadModel(lo).ok());
}

}  // namespace
}  // namespace compressd
