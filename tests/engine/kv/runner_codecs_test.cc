// The importance-aware and calibrated codecs inside ModelRunner and RunEval on a real model
// (stories260K): the SealAfterAttend ordering (a prefill step attends over its own blocks from
// the fp16 window, then seals them; later steps read the encoded blocks), and the evaluator's
// block-by-block steps and CSKV calibration.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "engine/core/thread_pool.h"
#include "engine/exec/evaluator.h"
#include "engine/exec/runner.h"
#include "engine/kv/kv_cache.h"
#include "engine/model/model_loader.h"
#include "tests/util/test_env.h"

namespace compressd {
namespace {

struct Side {
  std::shared_ptr<Model> model;
  std::unique_ptr<KvCache> cache;
  std::unique_ptr<ModelRunner> runner;
  std::vector<int32_t> blocks;
};

Side Make(const std::string& dir, const std::string& codec, ThreadPool* pool) {
  Side s;
  LoadOptions lo;
  lo.model = dir;
  lo.threads = 2;
  s.model = *LoadModel(lo);
  const ModelConfig& c = s.model->config;
  KvGeometry g;
  g.n_layers = c.num_hidden_layers;
  g.n_heads = c.num_attention_heads;
  g.n_kv_heads = c.num_key_value_heads;
  g.head_dim = c.head_dim;
  g.block_size = 16;
  auto k = MakeKvCodec(codec, g);
  EXPECT_TRUE(k.ok()) << k.status();
  const size_t bb = (*k)->LayerBlockBytes() * g.n_layers;
  s.cache = *KvCache::Create(std::move(*k), 8 * bb);
  for (int i = 0; i < 6; ++i) s.blocks.push_back(s.cache->pool().Allocate());
  s.runner = std::make_unique<ModelRunner>(s.model, s.cache.get(), pool, 96);
  return s;
}

std::vector<float> Step(Side& s, const std::vector<int32_t>& toks, int start, LogitsMode mode) {
  BatchEntry e;
  e.tokens = toks.data() + start;
  e.n_tokens = static_cast<int32_t>(toks.size()) - start;
  e.start_pos = start;
  e.block_table = s.blocks.data();
  e.n_blocks = (static_cast<int32_t>(toks.size()) + 15) / 16;
  e.logits = mode;
  int64_t rows = 0;
  const float* p = s.runner->Forward({e}, &rows);
  return std::vector<float>(p, p + rows * s.model->config.vocab_size);
}

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i)
    m = std::max(m, static_cast<double>(std::fabs(a[i] - b[i])));
  return m;
}

// The engine's thread pool hands out chunks dynamically: a step's outputs must not depend on
// the thread count or on which thread ran which rows, tokens or heads.
TEST(RunnerCodecs, PrefillLogitsDoNotDependOnThreads) {
  REQUIRE_SHARED(dir, "models/stories260K");
  std::vector<int32_t> toks;
  for (int i = 0; i < 48; ++i) toks.push_back(1 + (i * 37) % 500);
  for (const char* codec : {"fp16", "mikv:f0:l2"}) {
    ThreadPool one(1);
    Side a = Make(dir, codec, &one);
    const auto ref = Step(a, toks, 0, LogitsMode::kAll);
    for (int threads : {2, 3, 4}) {
      ThreadPool pool(threads);
      Side b = Make(dir, codec, &pool);
      EXPECT_EQ(MaxAbsDiff(Step(b, toks, 0, LogitsMode::kAll), ref), 0.0)
          << codec << " threads " << threads;
    }
  }
}

TEST(RunnerCodecs, PrefillAttendsFromWindowThenDecodeReadsEncodedBlocks) {
  REQUIRE_SHARED(dir, "models/stories260K");
  ThreadPool pool(2);
  std::vector<int32_t> toks;
  for (int i = 0; i < 49; ++i) toks.push_back(1 + (i * 37) % 500);
  Side fp16 = Make(dir, "fp16", &pool);
  const auto ref_prefill = Step(fp16, {toks.begin(), toks.end() - 1}, 0, LogitsMode::kAll);
  const auto ref_decode = Step(fp16, toks, 48, LogitsMode::kLast);
  for (const char* codec : {"mikv:f0:l2", "ems+int2:f25"}) {
    Side s = Make(dir, codec, &pool);
    // 48 tokens = 3 full blocks in one step: every position attends over fp16 staging.
    const auto prefill = Step(s, {toks.begin(), toks.end() - 1}, 0, LogitsMode::kAll);
    EXPECT_LT(MaxAbsDiff(prefill, ref_prefill), 1e-3) << codec;
    // The blocks were sealed after that step's attention: the next token reads 2-bit codes.
    const auto decode = Step(s, toks, 48, LogitsMode::kLast);
    const double d = MaxAbsDiff(decode, ref_decode);
    EXPECT_GT(d, 1e-3) << codec;
    EXPECT_LT(d, 5.0) << codec;
  }
}

TEST(RunnerCodecs, EvalStepsBlockByBlockAndCalibratesCskv) {
  REQUIRE_SHARED(dir, "models/stories260K");
  REQUIRE_SHARED(calib, "models/kdocs-7m/calibration.txt");
  EvalOptions o;
  o.model = dir;
  o.text_file = calib;
  o.context = 64;
  o.max_chunks = 2;
  o.threads = 2;
  o.kv_cache = "fp16";
  auto fp16 = RunEval(o);
  ASSERT_TRUE(fp16.ok()) << fp16.status();
  EXPECT_LT(fp16->kl_divergence, 1e-4);
  // mikv is evaluated block by block: positions past the first block read encoded blocks.
  o.kv_cache = "mikv:f0:l2";
  auto mikv = RunEval(o);
  ASSERT_TRUE(mikv.ok()) << mikv.status();
  EXPECT_GT(mikv->kl_divergence, 1e-4);
  EXPECT_LT(mikv->kv_bytes_per_token, fp16->kv_bytes_per_token / 2);
  // cskv without calibration text next to the model (stories260K has none) is refused...
  o.kv_cache = "cskv:r8";
  auto none = RunEval(o);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  // ...and with it, calibrated: full rank is lossless up to fp16, half rank is not.
  o.calibration_file = calib;
  o.kv_calibration_tokens = 4096;
  o.kv_cache = "cskv:r8";
  auto full = RunEval(o);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_LT(full->kl_divergence, 1e-4);
  o.kv_cache = "cskv:r4";
  auto half = RunEval(o);
  ASSERT_TRUE(half.ok()) << half.status();
  EXPECT_GT(half->kl_divergence, full->kl_divergence);
  EXPECT_DOUBLE_EQ(half->kv_bytes_per_token, fp16->kv_bytes_per_token / 2);
}

}  // namespace
}  // namespace compressd
