// Compressed checkpoints (engine/compress/checkpoint_io.h): compress kdocs-7m in memory with
// dense-converted, sparse (unstructured, 2:4, GQSA) and low-rank linears, save, reload through
// LoadModel (OpenCheckpoint sees compressd.json), and get bit-identical logits. Also: the
// reloaded linears view the mapped file (no recompression), and malformed metadata is
// INVALID_ARGUMENT naming the tensor.
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

#include "engine/compress/checkpoint_io.h"
#include "engine/compress/lowrank.h"
#include "engine/compress/sparse.h"
#include "engine/core/thread_pool.h"
#include "engine/exec/runner.h"
#include "engine/kv/kv_cache.h"
#include "engine/model/model_loader.h"
#include "gtest/gtest.h"
#include "tests/util/model_logits.h"
#include "tests/util/test_env.h"

namespace compressd {
namespace {

std::vector<float> Logits(std::shared_ptr<const Model> model, const std::vector<int32_t>& toks) {
  return testing::PrefillLogits(std::move(model), toks);
}

std::string TempDir(const std::string& tag) {
  std::string d = ::testing::TempDir() + "compressd_ckpt_" + tag + "_" + std::to_string(::getpid());
  ::mkdir(d.c_str(), 0755);
  return d;
}

// kdocs-7m with a mix of formats: q/k/v sparse (unstructured, 2:4, GQSA int4), o and down
// low-rank, gate bf16, up GQSA fp16; lm_head 2:4.
absl::StatusOr<std::shared_ptr<Model>> MixedModel(const std::string& dir) {
  LoadOptions lo;
  lo.model = dir;
  lo.weights = "f32";
  ASSIGN_OR_RETURN(std::shared_ptr<Model> m, LoadModel(lo));
  auto view = [](const Linear& l) {
    TensorView t;
    t.name = "w";
    t.dtype = DType::kF32;
    t.shape = {l.w.rows, l.w.cols};
    t.data = l.w.data;
    t.bytes = l.w.data_bytes;
    return t;
  };
  SparseParams un;
  SparseParams two;
  two.kind = SparseParams::Kind::kTwoFour;
  SparseParams gq;
  gq.kind = SparseParams::Kind::kGroup;
  gq.bits = 4;
  SparseParams gq16 = gq;
  gq16.bits = 16;
  LowRankParams lr;
  lr.ratio = 0.5;
  for (LayerWeights& L : m->weights.layers) {
    ASSIGN_OR_RETURN(L.q, CompressSparse(view(L.q), un, nullptr));
    ASSIGN_OR_RETURN(L.k, CompressSparse(view(L.k), two, nullptr));
    ASSIGN_OR_RETURN(L.v, CompressSparse(view(L.v), gq, nullptr));
    ASSIGN_OR_RETURN(L.o, CompressLowRank(view(L.o), lr, nullptr));
    ASSIGN_OR_RETURN(L.down, CompressLowRank(view(L.down), lr, nullptr));
    ASSIGN_OR_RETURN(L.gate, MakeDenseLinear(view(L.gate), DType::kBF16));
    ASSIGN_OR_RETURN(L.up, CompressSparse(view(L.up), gq16, nullptr));
  }
  ASSIGN_OR_RETURN(m->weights.lm_head, CompressSparse(view(m->weights.lm_head), two, nullptr));
  // As LoadModel derives for a tied lm_head that was compressed: embeddings read it.
  m->weights.embed_from_lm_head = true;
  m->weight_recipe = "test-mixed";
  return m;
}

TEST(CheckpointIo, RoundTripIdenticalLogits) {
  REQUIRE_SHARED(dir, "models/kdocs-7m");
  auto m = MixedModel(dir);
  ASSERT_TRUE(m.ok()) << m.status();
  const std::vector<int32_t> toks = {1, 450, 3012, 77, 1999, 5, 8, 4000, 12, 99};
  const std::vector<float> want = Logits(*m, toks);
  const std::string out = TempDir("mixed");
  ASSERT_TRUE(SaveCompressedCheckpoint(**m, out, dir).ok());

  LoadOptions lo;
  lo.model = out;
  auto back = LoadModel(lo);
  ASSERT_TRUE(back.ok()) << back.status();
  const LayerWeights& L = (*back)->weights.layers[3];
  EXPECT_EQ(L.q.format_name, "sparse-f16");
  EXPECT_EQ(L.k.format_name, "2:4-f16");
  EXPECT_EQ(L.v.format_name, "gqsa-g16-int4");
  EXPECT_TRUE(L.o.first != nullptr);
  EXPECT_EQ(L.gate.format_name, "bf16");
  EXPECT_EQ((*back)->WeightBytes(), (*m)->WeightBytes());
  EXPECT_EQ(Logits(*back, toks), want);  // bit-identical

  lo.weights = "bf16";
  EXPECT_EQ(LoadModel(lo).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CheckpointIo, RejectsMalformedMetadata) {
  REQUIRE_SHARED(dir, "models/kdocs-7m");
  auto m = MixedModel(dir);
  ASSERT_TRUE(m.ok()) << m.status();
  const std::string out = TempDir("bad");
  ASSERT_TRUE(SaveCompressedCheckpoint(**m, out, dir).ok());
  const std::string meta_path = out + "/compressd.json";
  const std::string good = testing::ReadFileOrDie(meta_path);
  auto with = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    const size_t at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    s.replace(at, from.size(), to);
    std::ofstream(meta_path, std::ios::trunc) << s;
    LoadOptions lo;
    lo.model = out;
    return LoadModel(lo).status();
  };
  // An unknown format field.
  absl::Status s = with("\"format_name\"", "\"bogus\": 1, \"format_name\"");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("bogus"), std::string::npos) << s;
  // Wrong cols: the buffers no longer match the format.
  s = with("\"cols\": 256", "\"cols\": 512");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find(".weight"), std::string::npos) << s;
  // Unknown kind.
  s = with("\"kind\": 3", "\"kind\": 9");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  std::ofstream(meta_path, std::ios::trunc) << good;
  LoadOptions lo;
  lo.model = out;
  EXPECT_TRUE(LoadModel(lo).ok());
}

}  // namespace
}  // namespace compressd
