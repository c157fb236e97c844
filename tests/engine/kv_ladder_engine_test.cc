// The KV pressure ladder end to end (engine_impl.cc + sched/ladder.h + quant_demote.h): real
// generation under a KV budget too small for the batch, with the ladder on and off. Model:
// stories260K from ../shared when present, else random:tiny.
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/engine.h"
#include "gtest/gtest.h"
#include "tests/util/engine_requests.h"
#include "tests/util/test_env.h"

namespace compressd {
namespace {

using testing::Collector;
using testing::Greedy;
using testing::ModelOrRandom;
using testing::Prompt;

constexpr int kRequests = 4;
constexpr int kPrompt = 100;
constexpr int kNew = 100;  // 200 tokens: 13 blocks of 16 per request

EngineOptions Options(bool ladder) {
  EngineOptions o;
  o.model = ModelOrRandom();
  o.threads = 2;
  o.max_running = 8;
  o.kv_cache = "int4";
  o.kv_pressure_ladder = ladder;
  return o;
}

// KV memory for `blocks` blocks of 16 tokens of the int4 codec.
int64_t BlocksMemory(int blocks, int* vocab) {
  auto probe = Engine::Create(Options(false));
  EXPECT_TRUE(probe.ok()) << probe.status();
  const double bpt = (*probe)->Summary().kv_bytes_per_token;
  *vocab = (*probe)->Summary().vocab_size;
  (*probe)->Shutdown();
  return static_cast<int64_t>(bpt * 16 * blocks) + 1;
}

struct RunResult {
  std::vector<std::vector<int32_t>> tokens;
  EngineStats stats;
};

RunResult RunConcurrently(Engine& e, int vocab, const std::string& tag) {
  std::vector<std::unique_ptr<Collector>> cs;
  for (int i = 0; i < kRequests; ++i) {
    cs.push_back(std::make_unique<Collector>());
    EXPECT_TRUE(e.Submit(Greedy(Prompt(i, kPrompt, vocab), kNew, tag + std::to_string(i)),
                         cs.back()->Callback())
                    .ok());
  }
  RunResult r;
  for (int i = 0; i < kRequests; ++i) {
    EXPECT_TRUE(cs[i]->Wait(300)) << "request " << i;
    EXPECT_EQ(cs[i]->final_event.finish_reason, FinishReason::kLength) << "request " << i;
    EXPECT_EQ(cs[i]->tokens.size(), static_cast<size_t>(kNew)) << "request " << i;
    r.tokens.push_back(cs[i]->tokens);
  }
  r.stats = e.Stats();
  return r;
}

TEST(KvLadderEngine, DemotesInsteadOfPreemptingAndCountsIt) {
  int vocab = 0;
  // 36 blocks for 4 x 13: without the ladder the batch must preempt; with it, each request
  // can give back up to 5 of its blocks (cold pairs of 13 blocks, sink and newest excepted).
  const int64_t mem = BlocksMemory(36, &vocab);
  RunResult off, on;
  {
    EngineOptions o = Options(false);
    o.kv_cache_memory = mem;
    auto e = Engine::Create(o);
    ASSERT_TRUE(e.ok()) << e.status();
    off = RunConcurrently(**e, vocab, "off");
    EXPECT_EQ(off.stats.kv_demotions_total, 0u);
    EXPECT_TRUE(off.stats.kv_demotion_from.empty());
  }
  {
    EngineOptions o = Options(true);
    o.kv_cache_memory = mem;
    auto e = Engine::Create(o);
    ASSERT_TRUE(e.ok()) << e.status();
    on = RunConcurrently(**e, vocab, "on");
    EXPECT_EQ(on.stats.kv_demotion_from, "int4");
    EXPECT_EQ(on.stats.kv_demotion_to, "int2");
    // After the pressure is gone, request 0 alone again: the same tokens as the first
    // time it ran alone (prefix-cache hits must never return a demoted block as a base one).
    Collector ref_again;
    ASSERT_TRUE(
        (*e)->Submit(Greedy(Prompt(0, kPrompt, vocab), kNew, "again"), ref_again.Callback()).ok());
    ASSERT_TRUE(ref_again.Wait(300));
    Collector alone;
    EngineOptions big = Options(true);
    auto fresh = Engine::Create(big);
    ASSERT_TRUE(fresh.ok());
    ASSERT_TRUE(
        (*fresh)->Submit(Greedy(Prompt(0, kPrompt, vocab), kNew, "alone"), alone.Callback()).ok());
    ASSERT_TRUE(alone.Wait(300));
    EXPECT_EQ(ref_again.tokens, alone.tokens);
  }
  EXPECT_GT(off.stats.preemptions_total, 0u);
  EXPECT_GT(on.stats.kv_demotions_total, 0u);
  EXPECT_LT(on.stats.preemptions_total, off.stats.preemptions_total);
  std::printf(
      "[ ladder ] off: %llu preemptions; on: %llu preemptions, %llu demotions (%s -> %s), "
      "%.3f ms per demotion (all layers, engine thread + pool)\n",
      static_cast<unsigned long long>(off.stats.preemptions_total),
      static_cast<unsigned long long>(on.stats.preemptions_total),
      static_cast<unsigned long long>(on.stats.kv_demotions_total),
      on.stats.kv_demotion_from.c_str(), on.stats.kv_demotion_to.c_str(),
      on.stats.kv_demotion_seconds_total * 1e3 /
          static_cast<double>(std::max<uint64_t>(1, on.stats.kv_demotions_total)));
}

TEST(KvLadderEngine, SharedAndPrefixCachedBlocksStayCorrectUnderPressure) {
  int vocab = 0;
  const int64_t mem = BlocksMemory(30, &vocab);
  EngineOptions o = Options(true);
  o.kv_cache_memory = mem;
  auto e = Engine::Create(o);
  ASSERT_TRUE(e.ok()) << e.status();
  const std::vector<int32_t> prompt = Prompt(7, kPrompt, vocab);
  // The first request registers the prompt's blocks; the others, submitted once it has
  // produced a token, share them (refcount > 1) while the batch runs out of blocks.
  std::vector<std::unique_ptr<Collector>> cs;
  cs.push_back(std::make_unique<Collector>());
  ASSERT_TRUE((*e)->Submit(Greedy(prompt, kNew, "s0"), cs.back()->Callback()).ok());
  for (int i = 0; i < 2000 && (*e)->Stats().generation_tokens_total == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (int i = 1; i < kRequests; ++i) {
    cs.push_back(std::make_unique<Collector>());
    ASSERT_TRUE(
        (*e)->Submit(Greedy(prompt, kNew, "s" + std::to_string(i)), cs.back()->Callback()).ok());
  }
  for (auto& c : cs) {
    ASSERT_TRUE(c->Wait(300));
    EXPECT_EQ(c->final_event.finish_reason, FinishReason::kLength);
  }
  const EngineStats st = (*e)->Stats();
  EXPECT_GT(st.prefix_cache_hits_total, 0u);
  EXPECT_GT(st.kv_demotions_total, 0u);
  // The prompt's cached blocks still hold base-format K/V: a request served from them alone
  // produces what a fresh engine produces.
  Collector again, fresh;
  ASSERT_TRUE((*e)->Submit(Greedy(prompt, kNew, "again"), again.Callback()).ok());
  ASSERT_TRUE(again.Wait(300));
  EXPECT_GT(again.final_event.usage.cached_tokens, 0);
  auto f = Engine::Create(Options(true));
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->Submit(Greedy(prompt, kNew, "fresh"), fresh.Callback()).ok());
  ASSERT_TRUE(fresh.Wait(300));
  EXPECT_EQ(again.tokens, fresh.tokens);
}

TEST(KvLadderEngine, UncontendedGreedyOutputIsUnchanged) {
  // No pressure: the ladder never acts and the tokens equal those with it off.
  std::vector<int32_t> with, without;
  int vocab = 0;
  for (bool ladder : {true, false}) {
    auto e = Engine::Create(Options(ladder));
    ASSERT_TRUE(e.ok()) << e.status();
    vocab = (*e)->Summary().vocab_size;
    Collector c;
    ASSERT_TRUE((*e)->Submit(Greedy(Prompt(3, kPrompt, vocab), kNew, "u"), c.Callback()).ok());
    ASSERT_TRUE(c.Wait(300));
    EXPECT_EQ((*e)->Stats().kv_demotions_total, 0u);
    EXPECT_EQ((*e)->Stats().preemptions_total, 0u);
    (ladder ? with : without) = c.tokens;
  }
  EXPECT_EQ(with, without);
}

TEST(KvLadderEngine, FloorAndCodecsWithoutALadderPreemptAsBefore) {
  for (const char* codec : {"fp16", "int2"}) {
    EngineOptions o = Options(true);
    o.kv_cache = codec;
    auto e = Engine::Create(o);
    ASSERT_TRUE(e.ok()) << e.status();
    EXPECT_TRUE((*e)->Stats().kv_demotion_from.empty()) << codec;
  }
  EngineOptions o = Options(true);
  o.kv_pressure_min_bits = 4;  // int4 -> int2 is below the floor
  auto e = Engine::Create(o);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE((*e)->Stats().kv_demotion_from.empty());
  o.kv_pressure_min_bits = 3;
  EXPECT_EQ(Engine::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace compressd
