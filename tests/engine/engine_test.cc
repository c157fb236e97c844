// Engine behaviour through its public API with real models: batch invariance, prefix
// caching, cancellation, validation, preemption under a tiny KV budget.
#include "engine/engine.h"

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "gtest/gtest.h"
#include "tests/util/engine_requests.h"
#include "tests/util/test_env.h"

namespace compressd {
namespace {

using testing::Collector;
using testing::Greedy;
using testing::ModelOrRandom;
using testing::Prompt;

TEST(Engine, GreedyTokensIdenticalAloneAndAmongSixteenOthers) {
  EngineOptions o;
  o.model = ModelOrRandom();
  o.threads = 2;
  o.max_running = 17;
  o.max_batch_tokens = 64;  // forces chunked prefill interleaved with decodes
  auto e = Engine::Create(o);
  ASSERT_TRUE(e.ok()) << e.status();
  const int vocab = (*e)->Summary().vocab_size;
  const auto target = Prompt(0, 37, vocab);

  Collector alone;
  ASSERT_TRUE((*e)->Submit(Greedy(target, 48, "alone"), alone.Callback()).ok());
  ASSERT_TRUE(alone.Wait());

  std::vector<std::unique_ptr<Collector>> others;
  Collector together;
  for (int i = 0; i < 16; ++i) {
    others.push_back(std::make_unique<Collector>());
    ASSERT_TRUE((*e)->Submit(Greedy(Prompt(i + 1, 5 + 7 * i, vocab), 40 + i, "o" + std::to_string(i)),
                             others.back()->Callback())
                    .ok());
    if (i == 7) {
      ASSERT_TRUE((*e)->Submit(Greedy(target, 48, "together"), together.Callback()).ok());
    }
  }
  ASSERT_TRUE(together.Wait());
  for (auto& c : others) ASSERT_TRUE(c->Wait());
  ASSERT_EQ(alone.tokens.size(), 48u);
  EXPECT_EQ(alone.tokens, together.tokens);
  EXPECT_EQ(alone.text, together.text);
}

TEST(Engine, PrefixCacheServesSharedPromptBlocks) {
  EngineOptions o;
  o.model = ModelOrRandom();
  o.threads = 2;
  auto e = Engine::Create(o);
  ASSERT_TRUE(e.ok()) << e.status();
  const auto prompt = Prompt(3, 70, (*e)->Summary().vocab_size);
  Collector a, b;
  ASSERT_TRUE((*e)->Submit(Greedy(prompt, 8, "a"), a.Callback()).ok());
  ASSERT_TRUE(a.Wait());
  ASSERT_TRUE((*e)->Submit(Greedy(prompt, 8, "b"), b.Callback()).ok());
  ASSERT_TRUE(b.Wait());
  EXPECT_EQ(a.final_event.usage.cached_tokens, 0);
  EXPECT_EQ(b.final_event.usage.cached_tokens, 64);  // 4 full blocks of 16
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_GE((*e)->Stats().prefix_cache_hits_total, 64u);
}

TEST(Engine, CancelFreesBlocksWithinAStep) {
  EngineOptions o;
  o.model = ModelOrRandom();
  o.threads = 2;
  auto e = Engine::Create(o);
  ASSERT_TRUE(e.ok()) << e.status();
  Collector c;
  GenerationRequest r = Greedy(Prompt(1, 10, (*e)->Summary().vocab_size), 0, "long");
  ASSERT_TRUE((*e)->Submit(r, c.Callback()).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  (*e)->Cancel("long");
  ASSERT_TRUE(c.Wait());
  EXPECT_EQ(c.final_event.finish_reason, FinishReason::kCancelled);
  for (int i = 0; i < 100 && !(*e)->Idle(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_TRUE((*e)->Idle());
  EXPECT_EQ((*e)->Stats().running, 0);
}

TEST(Engine, RejectsBadRequestsAndKeepsServing) {
  EngineOptions o;
  o.model = ModelOrRandom();
  o.threads = 1;
  auto e = Engine::Create(o);
  ASSERT_TRUE(e.ok()) << e.status();
  const int ctx = (*e)->Summary().context_length;
  const int vocab = (*e)->Summary().vocab_size;
  auto expect = [&](GenerationRequest r, absl::StatusCode code, const char* field) {
    absl::Status st = (*e)->Submit(std::move(r), [](GenerationEvent&&) {});
    EXPECT_EQ(st.code(), code) << st;
    EXPECT_NE(st.message().find(field), std::string::npos) << st;
  };
  expect(Greedy({}, 4, "x"), absl::StatusCode::kInvalidArgument, "prompt");
  expect(Greedy({1, vocab}, 4, "x"), absl::StatusCode::kInvalidArgument, "prompt_token_ids[1]");
  expect(Greedy(std::vector<int32_t>(ctx, 5), 4, "x"), absl::StatusCode::kInvalidArgument,
         "context length");
  expect(Greedy({1, 5}, ctx, "x"), absl::StatusCode::kInvalidArgument, "max_tokens");
  GenerationRequest bad = Greedy({1, 5}, 4, "x");
  bad.sampling.temperature = -3;
  expect(bad, absl::StatusCode::kInvalidArgument, "temperature");
  bad = Greedy({1, 5}, 4, "x");
  bad.stop = {""};
  expect(bad, absl::StatusCode::kInvalidArgument, "stop[0]");
  Collector ok;
  ASSERT_TRUE((*e)->Submit(Greedy({1, 5}, 4, "fine"), ok.Callback()).ok());
  ASSERT_TRUE(ok.Wait());
  EXPECT_EQ(ok.tokens.size(), 4u);
}

TEST(Engine, PreemptsAndRecomputesUnderATinyKvBudget) {
  EngineOptions o;
  o.model = ModelOrRandom();
  o.threads = 2;
  o.max_running = 8;
  o.kv_cache = "fp32";
  auto probe = Engine::Create(o);
  ASSERT_TRUE(probe.ok());
  const double bpt = (*probe)->Summary().kv_bytes_per_token;
  const int vocab = (*probe)->Summary().vocab_size;
  (*probe)->Shutdown();
  o.kv_cache_memory = static_cast<int64_t>(bpt * 16 * 12);  // 12 blocks of 16 tokens
  auto e = Engine::Create(o);
  ASSERT_TRUE(e.ok()) << e.status();
  // Reference outputs one at a time, then all at once (which must preempt).
  std::vector<std::vector<int32_t>> ref;
  for (int i = 0; i < 4; ++i) {
    Collector c;
    ASSERT_TRUE((*e)->Submit(Greedy(Prompt(i, 20, vocab), 40, "r" + std::to_string(i)), c.Callback()).ok());
    ASSERT_TRUE(c.Wait());
    ref.push_back(c.tokens);
  }
  std::vector<std::unique_ptr<Collector>> cs;
  for (int i = 0; i < 4; ++i) {
    cs.push_back(std::make_unique<Collector>());
    ASSERT_TRUE((*e)->Submit(Greedy(Prompt(i, 20, vocab), 40, "p" + std::to_string(i)), cs.back()->Callback()).ok());
  }
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(cs[i]->Wait());
    EXPECT_EQ(cs[i]->tokens, ref[i]) << "request " << i;
  }
  EXPECT_GT((*e)->Stats().preemptions_total, 0u);
}

TEST(Engine, StopStringsAreWithheldAndEndTheStream) {
  const std::string dir = testing::SharedPath("models/stories260K");
  if (dir.empty()) GTEST_SKIP() << "stories260K absent";
  EngineOptions o;
  o.model = dir;
  o.threads = 1;
  auto e = Engine::Create(o);
  ASSERT_TRUE(e.ok()) << e.status();
  GenerationRequest r = Greedy({1}, 200, "s");
  r.ignore_eos = false;
  r.stop = {"Lily."};
  Collector c;
  ASSERT_TRUE((*e)->Submit(r, c.Callback()).ok());
  ASSERT_TRUE(c.Wait());
  EXPECT_EQ(c.final_event.finish_reason, FinishReason::kStop);
  EXPECT_EQ(c.final_event.stop_reason, "Lily.");
  EXPECT_EQ(c.text, "Once upon a time, there was a little girl named ");
}

}  // namespace
}  // namespace compressd
