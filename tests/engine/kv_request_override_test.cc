// Per-request KV codec (GenerationRequest::kv_cache): a request may ask for the codec the
// server's KV pressure ladder demotes to, and then has its cold, full, unshared blocks demoted
// eagerly (sched/scheduler.h "Requested demotions", engine_impl.cc ApplyDemotions). The
// scheduler part is tested as a pure function; the engine part end to end on stories260K from
// ../shared when present, else random:tiny (and random:tiny-8k for a long chunked prefill).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "engine/engine.h"
#include "engine/sched/scheduler.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/util/engine_requests.h"
#include "tests/util/sched_fixtures.h"
#include "tests/util/test_env.h"

namespace compressd {
namespace {

using testing::Collector;
using ::testing::ElementsAre;
using testing::Greedy;
using ::testing::HasSubstr;
using testing::ModelOrRandom;
using testing::Prompt;

// ---- scheduler (pure) -------------------------------------------------------------------

using testing::Running;

SchedulerConfig Cfg(int32_t max_eager = 16) {
  SchedulerConfig c;
  c.block_size = 16;
  c.max_batch_tokens = 64;
  c.max_running = 8;
  c.max_eager_demotions = max_eager;
  return c;
}

const ScheduledDemotion* FindDemotion(const SchedulePlan& p, int64_t id) {
  for (const auto& d : p.demotions) {
    if (d.id == id) return &d;
  }
  return nullptr;
}

TEST(SchedulerRequestedDemotion, DemotesWithoutPressureOnlyForSequencesThatAskedForIt) {
  // Plenty of free blocks: no pressure. Sequence 2 asked for the smaller codec, 1 did not.
  const std::vector<SchedSeq> run = {Running(1, 97, 96, 6, 2, false),
                                     Running(2, 97, 96, 6, 2, true)};
  const SchedulePlan p = Schedule(Cfg(), run, {}, 100);
  EXPECT_EQ(FindDemotion(p, 1), nullptr);
  const ScheduledDemotion* d = FindDemotion(p, 2);
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->merges, 0);     // none under pressure
  EXPECT_EQ(d->requested, 2);  // every demotable pair
  EXPECT_TRUE(p.preempted.empty());
  EXPECT_EQ(p.chunks.size(), 2u);
}

TEST(SchedulerRequestedDemotion, CappedPerStepOldestFirst) {
  const std::vector<SchedSeq> run = {Running(1, 400, 384, 24, 10, true),
                                     Running(2, 400, 384, 24, 10, true)};
  const SchedulePlan p = Schedule(Cfg(/*max_eager=*/12), run, {}, 100);
  ASSERT_NE(FindDemotion(p, 1), nullptr);
  ASSERT_NE(FindDemotion(p, 2), nullptr);
  EXPECT_EQ(FindDemotion(p, 1)->requested, 10);
  EXPECT_EQ(FindDemotion(p, 2)->requested, 2);
  const SchedulePlan none = Schedule(Cfg(/*max_eager=*/0), run, {}, 100);
  EXPECT_TRUE(none.demotions.empty());
}

TEST(SchedulerRequestedDemotion, DoesNotHoldBackAdmission) {
  SchedSeq w;
  w.id = 9;
  w.arrival = 9;
  w.num_tokens = 4;
  const SchedulePlan p = Schedule(Cfg(), {Running(1, 97, 96, 6, 2, true)}, {w}, 10);
  ASSERT_NE(FindDemotion(p, 1), nullptr);
  EXPECT_EQ(FindDemotion(p, 1)->requested, 2);
  EXPECT_THAT(p.admitted, ElementsAre(9));
}

TEST(SchedulerRequestedDemotion, PressureTakesFirstAndTheRestIsRequested) {
  // Sequence 1 decodes at a block boundary with nothing free: one of its pairs is demoted
  // under pressure (counted as freed), the other two eagerly (not counted).
  const SchedulePlan p = Schedule(Cfg(), {Running(1, 97, 96, 6, 3, true)}, {}, 0);
  const ScheduledDemotion* d = FindDemotion(p, 1);
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->merges, 1);
  EXPECT_EQ(d->requested, 2);
  ASSERT_EQ(p.chunks.size(), 1u);
  EXPECT_EQ(p.chunks[0].new_blocks, 1);
}

TEST(SchedulerRequestedDemotion, RandomisedInvariants) {
  std::mt19937 rng(11);
  for (int iter = 0; iter < 3000; ++iter) {
    const testing::RandomSchedState st = testing::RandomSchedStateOf(rng, 5, true);
    const std::vector<SchedSeq>& run = st.running;
    const std::vector<SchedSeq>& wait = st.waiting;
    const int64_t free = rng() % 6;
    const int32_t cap = static_cast<int32_t>(rng() % 5);
    const SchedulePlan p = Schedule(Cfg(cap), run, wait, free);
    // Requested demotions are never counted as freed blocks.
    int64_t freed = free, planned = 0, requested = 0;
    bool pressure = false;
    for (const auto& c : p.chunks) planned += c.new_blocks;
    for (int64_t id : p.preempted) freed += run[id - 1].blocks_held;
    for (const auto& d : p.demotions) {
      const SchedSeq& s = run[d.id - 1];
      EXPECT_LE(d.merges + d.requested, s.demotable_blocks) << "iteration " << iter;
      EXPECT_GT(d.merges + d.requested, 0);
      EXPECT_GE(d.requested, 0);
      if (d.requested > 0) {
        EXPECT_TRUE(s.eager_demotion) << "iteration " << iter;
      }
      EXPECT_EQ(std::count(p.preempted.begin(), p.preempted.end(), d.id), 0)
          << "demotes a preempted sequence";
      freed += d.merges;
      requested += d.requested;
      pressure = pressure || d.merges > 0;
    }
    EXPECT_LE(planned, freed) << "iteration " << iter;
    EXPECT_LE(requested, cap) << "iteration " << iter;
    if (pressure || !p.preempted.empty()) {
      EXPECT_TRUE(p.admitted.empty()) << "iteration " << iter;
    }
  }
}

// ---- engine -----------------------------------------------------------------------------

constexpr int kPrompt = 100;
constexpr int kNew = 140;  // 240 tokens: 15 blocks of 16 (random:tiny has a 256 context)

EngineOptions Options(const std::string& codec = "int8") {
  EngineOptions o;
  o.model = ModelOrRandom();
  o.threads = 2;
  o.max_running = 8;
  o.kv_cache = codec;
  return o;
}

GenerationRequest WithCodec(GenerationRequest r, const std::string& codec) {
  r.kv_cache = codec;
  return r;
}

struct Result {
  std::vector<int32_t> tokens;
  Usage usage;
};

Result RunOne(Engine& e, GenerationRequest r) {
  Collector c;
  const absl::Status st = e.Submit(std::move(r), c.Callback());
  EXPECT_TRUE(st.ok()) << st;
  if (!st.ok()) return {};
  EXPECT_TRUE(c.Wait(300));
  EXPECT_EQ(c.final_event.finish_reason, FinishReason::kLength);
  return {c.tokens, c.final_event.usage};
}

TEST(KvRequestOverride, EngineListsTheAllowedCodecs) {
  auto e = Engine::Create(Options("int8"));
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_THAT((*e)->Summary().kv_cache_request_codecs, ElementsAre("int8", "int4"));
  EngineOptions o = Options("int4");
  auto e4 = Engine::Create(o);
  ASSERT_TRUE(e4.ok()) << e4.status();
  EXPECT_THAT((*e4)->Summary().kv_cache_request_codecs, ElementsAre("int4", "int2"));
  o.kv_pressure_min_bits = 4;  // int4 -> int2 is below the floor: no smaller codec
  auto floor = Engine::Create(o);
  ASSERT_TRUE(floor.ok()) << floor.status();
  EXPECT_THAT((*floor)->Summary().kv_cache_request_codecs, ElementsAre("int4"));
  auto fp16 = Engine::Create(Options("fp16"));
  ASSERT_TRUE(fp16.ok()) << fp16.status();
  EXPECT_THAT((*fp16)->Summary().kv_cache_request_codecs, ElementsAre("fp16"));
}

TEST(KvRequestOverride, SmallerCodecDemotesEagerlyAndHoldsFewerBytes) {
  auto e = Engine::Create(Options("int8"));
  ASSERT_TRUE(e.ok()) << e.status();
  const int vocab = (*e)->Summary().vocab_size;
  const Result base = RunOne(**e, Greedy(Prompt(1, kPrompt, vocab), kNew, "base"));
  EXPECT_EQ((*e)->Stats().kv_demotions_total, 0u);  // no pressure: the ladder never acts
  const Result small =
      RunOne(**e, WithCodec(Greedy(Prompt(1, kPrompt, vocab), kNew, "small"), "int4"));
  const EngineStats st = (*e)->Stats();
  EXPECT_GT(st.kv_demotions_total, 0u);
  EXPECT_EQ(st.kv_demotions_requested_total, st.kv_demotions_total);  // all requested
  EXPECT_EQ(st.kv_demotion_from, "int8");
  EXPECT_EQ(st.kv_demotion_to, "int4");
  EXPECT_EQ(st.preemptions_total, 0u);
  ASSERT_EQ(small.tokens.size(), static_cast<size_t>(kNew));
  // 15 blocks without; with: sink, 6 merged pairs, the newest full blocks and the tail.
  EXPECT_GT(base.usage.kv_bytes, 0u);
  EXPECT_LT(small.usage.kv_bytes, base.usage.kv_bytes * 7 / 10)
      << "with " << small.usage.kv_bytes << " without " << base.usage.kv_bytes;
  // The server's own codec named explicitly is the default: no demotion, the same tokens.
  const uint64_t before = (*e)->Stats().kv_demotions_total;
  const Result same =
      RunOne(**e, WithCodec(Greedy(Prompt(1, kPrompt, vocab), kNew, "same"), "int8"));
  EXPECT_EQ((*e)->Stats().kv_demotions_total, before);
  EXPECT_EQ(same.tokens, base.tokens);
  EXPECT_EQ(same.usage.kv_bytes, base.usage.kv_bytes);
  int agree = 0;
  for (size_t i = 0; i < base.tokens.size() && i < small.tokens.size(); ++i) {
    agree += base.tokens[i] == small.tokens[i] ? 1 : 0;
  }
  std::printf(
      "[ override ] %s int8: kv_bytes %llu without, %llu with kv_cache=int4 (%.2fx); "
      "%llu demotions; greedy tokens agree %d/%d\n",
      Options().model.c_str(), static_cast<unsigned long long>(base.usage.kv_bytes),
      static_cast<unsigned long long>(small.usage.kv_bytes),
      static_cast<double>(small.usage.kv_bytes) / base.usage.kv_bytes,
      static_cast<unsigned long long>(st.kv_demotions_total), agree, kNew);
}

TEST(KvRequestOverride, OtherRequestsAreUnaffected) {
  int vocab = 0;
  Result alone_b, alone_c;
  {
    auto e = Engine::Create(Options());
    ASSERT_TRUE(e.ok()) << e.status();
    vocab = (*e)->Summary().vocab_size;
    alone_b = RunOne(**e, Greedy(Prompt(2, kPrompt, vocab), kNew, "b"));
  }
  {
    auto e = Engine::Create(Options());
    ASSERT_TRUE(e.ok()) << e.status();
    alone_c = RunOne(**e, Greedy(Prompt(3, kPrompt, vocab), kNew, "c"));
  }
  auto e = Engine::Create(Options());
  ASSERT_TRUE(e.ok()) << e.status();
  // B (server codec) is running and has registered its prompt blocks; then A asks for int4
  // with B's prompt (it shares B's prompt blocks: those must keep their bytes) and C (server
  // codec, its own prompt) runs beside both.
  Collector b, a, c;
  ASSERT_TRUE((*e)->Submit(Greedy(Prompt(2, kPrompt, vocab), kNew, "b"), b.Callback()).ok());
  for (int i = 0; i < 4000 && (*e)->Stats().generation_tokens_total < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_TRUE(
      (*e)->Submit(WithCodec(Greedy(Prompt(2, kPrompt, vocab), kNew, "a"), "int4"), a.Callback())
          .ok());
  ASSERT_TRUE((*e)->Submit(Greedy(Prompt(3, kPrompt, vocab), kNew, "c"), c.Callback()).ok());
  for (Collector* x : {&b, &a, &c}) {
    ASSERT_TRUE(x->Wait(300));
    EXPECT_EQ(x->final_event.finish_reason, FinishReason::kLength);
  }
  EXPECT_GT(a.final_event.usage.cached_tokens, 0);  // it did share B's prompt blocks
  EXPECT_GT((*e)->Stats().kv_demotions_requested_total, 0u);
  EXPECT_EQ(b.tokens, alone_b.tokens);
  EXPECT_EQ(c.tokens, alone_c.tokens);
  // Demoted blocks were forgotten by the prefix cache: B's prompt again, now served from
  // whatever is still cached, gives what it gave alone.
  const Result again = RunOne(**e, Greedy(Prompt(2, kPrompt, vocab), kNew, "again"));
  EXPECT_EQ(again.tokens, alone_b.tokens);
}

TEST(KvRequestOverride, ARequestAdmittedOntoItsBlocksKeepsThemShared) {
  // A (int4) prefills its 100-token prompt in one step (the whole budget), so B (same prompt,
  // server codec, submitted right after) is admitted in the next step, the step in which A's
  // first cold pairs become demotable. B must get all 6 prompt blocks from the prefix cache
  // and A must then leave them alone (they are shared): the engine demotes after admitting.
  // Up to 5 tries, in case B reached the engine only after that step.
  int vocab = 0;
  Result alone;
  {
    auto e = Engine::Create(Options());
    ASSERT_TRUE(e.ok()) << e.status();
    vocab = (*e)->Summary().vocab_size;
    alone = RunOne(**e, Greedy(Prompt(8, kPrompt, vocab), 50, "alone"));
  }
  int32_t best_cached = 0;
  for (int attempt = 0; attempt < 5 && best_cached < 96; ++attempt) {
    EngineOptions o = Options();
    o.max_batch_tokens = kPrompt;
    auto e = Engine::Create(o);
    ASSERT_TRUE(e.ok()) << e.status();
    Collector a, b;
    ASSERT_TRUE(
        (*e)->Submit(WithCodec(Greedy(Prompt(8, kPrompt, vocab), 50, "a"), "int4"), a.Callback())
            .ok());
    ASSERT_TRUE((*e)->Submit(Greedy(Prompt(8, kPrompt, vocab), 50, "b"), b.Callback()).ok());
    ASSERT_TRUE(a.Wait(300));
    ASSERT_TRUE(b.Wait(300));
    EXPECT_EQ(b.tokens, alone.tokens) << "attempt " << attempt;
    best_cached = std::max(best_cached, b.final_event.usage.cached_tokens);
  }
  EXPECT_EQ(best_cached, 96);
}

TEST(KvRequestOverride, DemotedPromptBlocksAreNotServedFromThePrefixCache) {
  int vocab = 0;
  Result alone;
  {
    auto e = Engine::Create(Options());
    ASSERT_TRUE(e.ok()) << e.status();
    vocab = (*e)->Summary().vocab_size;
    alone = RunOne(**e, Greedy(Prompt(4, kPrompt, vocab), kNew, "alone"));
  }
  auto e = Engine::Create(Options());
  ASSERT_TRUE(e.ok()) << e.status();
  RunOne(**e, WithCodec(Greedy(Prompt(4, kPrompt, vocab), kNew, "small"), "int4"));
  EXPECT_GT((*e)->Stats().kv_demotions_requested_total, 0u);
  const Result after = RunOne(**e, Greedy(Prompt(4, kPrompt, vocab), kNew, "after"));
  EXPECT_EQ(after.tokens, alone.tokens);
  // Only the sink block can still be a hit: block 1 onwards were demoted and forgotten.
  EXPECT_LE(after.usage.cached_tokens, 16);
}

TEST(KvRequestOverride, LongChunkedPrefillSpreadsItsDemotionsOverSteps) {
  EngineOptions o = Options();
  o.model = "random:tiny-8k";
  o.max_batch_tokens = 512;
  auto e = Engine::Create(o);
  ASSERT_TRUE(e.ok()) << e.status();
  const int vocab = (*e)->Summary().vocab_size;
  constexpr int kLong = 3000, kGen = 64;
  const Result base = RunOne(**e, Greedy(Prompt(5, kLong, vocab), kGen, "base"));
  // Another prompt: the first one's blocks are in the prefix cache, and a request admitted
  // with 187 cached blocks holds them all (at the base codec) before it can demote them.
  const Result small =
      RunOne(**e, WithCodec(Greedy(Prompt(6, kLong, vocab), kGen, "small"), "int4"));
  ASSERT_EQ(small.tokens.size(), static_cast<size_t>(kGen));
  // 192 blocks: about 94 pairs to demote, at most 16 a step while the prefill adds 32 blocks
  // a step, so the peak is about 32 + 5 * 16 blocks instead of 192.
  const EngineStats st = (*e)->Stats();
  EXPECT_GE(st.kv_demotions_requested_total, 80u);
  EXPECT_EQ(st.preemptions_total, 0u);
  EXPECT_LT(small.usage.kv_bytes, base.usage.kv_bytes * 7 / 10)
      << "with " << small.usage.kv_bytes << " without " << base.usage.kv_bytes;
  std::printf(
      "[ override ] random:tiny-8k int8, %d-token prompt: kv_bytes %llu without, %llu "
      "with kv_cache=int4; %llu demotions\n",
      kLong, static_cast<unsigned long long>(base.usage.kv_bytes),
      static_cast<unsigned long long>(small.usage.kv_bytes),
      static_cast<unsigned long long>(st.kv_demotions_requested_total));
}

// A long request on a real text prompt, with and without kv_cache=int4 on an int8 server:
// KV bytes and the text. Model: $COMPRESSD_OVERRIDE_MODEL (e.g. random:smollm2-135m), else
// stories260K from ../shared, else random:tiny.
TEST(KvRequestOverride, LongTextRequestBytesAndText) {
  EngineOptions o = Options("int8");
  if (const char* m = std::getenv("COMPRESSD_OVERRIDE_MODEL")) o.model = m;
  o.threads = 0;
  auto e = Engine::Create(o);
  ASSERT_TRUE(e.ok()) << e.status();
  std::vector<int32_t> prompt = (*e)->Tokenize("Once upon a time, there was a little girl", true);
  const int ctx = (*e)->Summary().context_length;
  const int gen = std::min(ctx, 1024) - static_cast<int>(prompt.size()) - 1;
  Result r[2];
  std::string text[2];
  for (int i = 0; i < 2; ++i) {
    Collector c;
    GenerationRequest q = Greedy(prompt, gen, i == 0 ? "server-codec" : "int4");
    q.kv_cache = i == 0 ? "" : "int4";
    ASSERT_TRUE((*e)->Submit(std::move(q), c.Callback()).ok());
    ASSERT_TRUE(c.Wait(600));
    r[i] = {c.tokens, c.final_event.usage};
    text[i] = c.text;
  }
  EXPECT_LT(r[1].usage.kv_bytes, r[0].usage.kv_bytes);
  size_t same = 0;
  while (same < r[0].tokens.size() && same < r[1].tokens.size() &&
         r[0].tokens[same] == r[1].tokens[same]) {
    ++same;
  }
  auto head = [](const std::string& t) { return t.substr(0, std::min<size_t>(t.size(), 400)); };
  std::printf(
      "[ override ] %s, kv int8, %zu-token prompt + %d tokens: kv_bytes %llu "
      "(server codec) vs %llu (kv_cache=int4) = %.3fx; %llu requested demotions; "
      "identical greedy prefix %zu tokens\n--- server codec:\n%s\n--- int4:\n%s\n",
      o.model.c_str(), prompt.size(), gen, static_cast<unsigned long long>(r[0].usage.kv_bytes),
      static_cast<unsigned long long>(r[1].usage.kv_bytes),
      static_cast<double>(r[1].usage.kv_bytes) / r[0].usage.kv_bytes,
      static_cast<unsigned long long>((*e)->Stats().kv_demotions_requested_total), same,
      head(text[0]).c_str(), head(text[1]).c_str());
}

TEST(KvRequestOverride, RejectsCodecsTheServerCannotGive) {
  auto e = Engine::Create(Options("int8"));
  ASSERT_TRUE(e.ok()) << e.status();
  const int vocab = (*e)->Summary().vocab_size;
  for (const char* bad : {"int2", "fp16", "fp32", "bogus", "INT4", "int4+gear"}) {
    Collector c;
    const absl::Status st = (*e)->Submit(
        WithCodec(Greedy(Prompt(1, 8, vocab), 4, std::string("bad-") + bad), bad), c.Callback());
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(st.message()), HasSubstr("kv_cache"));
    EXPECT_THAT(std::string(st.message()), HasSubstr("\"int8\", \"int4\"")) << st;
  }
  // Ladder off: only the server's codec.
  EngineOptions o = Options("int8");
  o.kv_pressure_ladder = false;
  auto off = Engine::Create(o);
  ASSERT_TRUE(off.ok()) << off.status();
  Collector c;
  const absl::Status st =
      (*off)->Submit(WithCodec(Greedy(Prompt(1, 8, vocab), 4, "off"), "int4"), c.Callback());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("no smaller codec"));
  // A server codec without a ladder: fp16.
  auto fp16 = Engine::Create(Options("fp16"));
  ASSERT_TRUE(fp16.ok()) << fp16.status();
  Collector c2;
  EXPECT_EQ((*fp16)
                ->Submit(WithCodec(Greedy(Prompt(1, 8, vocab), 4, "fp"), "int8"), c2.Callback())
                .code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace compressd
