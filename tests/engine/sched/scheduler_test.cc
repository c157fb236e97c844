// The scheduling policy as a pure function: admission, chunked prefill, preemption,
// fairness and starvation, without a model.
#include "engine/sched/scheduler.h"

#include <algorithm>

#include "gtest/gtest.h"
#include "tests/util/sched_fixtures.h"

namespace compressd {
namespace {

using testing::Running;
using testing::Waiting;

SchedulerConfig Cfg(int32_t budget = 64, int32_t max_running = 8) {
  SchedulerConfig c;
  c.block_size = 16;
  c.max_batch_tokens = budget;
  c.max_running = max_running;
  return c;
}

const ScheduledChunk* Find(const SchedulePlan& p, int64_t id) {
  for (const auto& c : p.chunks) {
    if (c.id == id) return &c;
  }
  return nullptr;
}

TEST(Scheduler, AdmitsWaitingInArrivalOrderWithinBudget) {
  SchedulePlan p = Schedule(Cfg(64), {}, {Waiting(2, 40), Waiting(1, 40)}, 100);
  ASSERT_EQ(p.admitted.size(), 2u);
  EXPECT_EQ(p.admitted[0], 1);  // older first
  EXPECT_EQ(Find(p, 1)->num_tokens, 40);
  EXPECT_EQ(Find(p, 2)->num_tokens, 24);  // chunked: the rest of the budget
  EXPECT_EQ(p.batch_tokens, 64);
}

TEST(Scheduler, ChunkedPrefillContinuesNextStep) {
  // A 100-token prompt with 64 computed: 36 left, one more block needed (4 held, 7 total).
  SchedulePlan p = Schedule(Cfg(64), {Running(1, 100, 64, 4)}, {}, 10);
  ASSERT_NE(Find(p, 1), nullptr);
  EXPECT_EQ(Find(p, 1)->num_tokens, 36);
  EXPECT_EQ(Find(p, 1)->new_blocks, 3);
}

TEST(Scheduler, DecodesGoBeforePrefillChunks) {
  // Older sequence mid-prefill, newer one decoding; budget 8: decode must not starve.
  SchedulePlan p = Schedule(Cfg(8), {Running(1, 100, 16, 1), Running(2, 21, 20, 2)}, {}, 10);
  ASSERT_NE(Find(p, 2), nullptr);
  EXPECT_EQ(Find(p, 2)->num_tokens, 1);
  EXPECT_EQ(Find(p, 1)->num_tokens, 7);
  EXPECT_EQ(p.chunks.front().id, 2);
}

TEST(Scheduler, PreemptsNewestWhenBlocksRunOut) {
  // Three decoding sequences, each needs a new block (tokens at block boundary), 1 free.
  std::vector<SchedSeq> run = {Running(1, 33, 32, 2), Running(2, 33, 32, 2), Running(3, 33, 32, 2)};
  SchedulePlan p = Schedule(Cfg(64), run, {Waiting(4, 10)}, 1);
  // Seq 1 takes the free block; seq 2 needs one: preempt the newest (3), freeing 2.
  ASSERT_EQ(p.preempted.size(), 1u);
  EXPECT_EQ(p.preempted[0], 3);
  EXPECT_NE(Find(p, 1), nullptr);
  EXPECT_NE(Find(p, 2), nullptr);
  EXPECT_EQ(Find(p, 3), nullptr);
  EXPECT_TRUE(p.admitted.empty()) << "no admission in a step that preempted";
}

TEST(Scheduler, PreemptsItselfWhenItIsTheNewest) {
  std::vector<SchedSeq> run = {Running(1, 33, 32, 2)};
  SchedulePlan p = Schedule(Cfg(64), run, {}, 0);
  ASSERT_EQ(p.preempted.size(), 1u);
  EXPECT_EQ(p.preempted[0], 1);
  EXPECT_TRUE(p.chunks.empty());
}

TEST(Scheduler, PreemptedChunkReturnsItsBudgetAndBlocks) {
  // Seq 3 (newest) is scheduled as a decode first, then seq 1's prefill chunk needs more
  // blocks than are free, so seq 3 is preempted and its planned block given back.
  std::vector<SchedSeq> run = {Running(1, 200, 16, 1), Running(2, 17, 16, 1), Running(3, 17, 16, 1)};
  SchedulePlan p = Schedule(Cfg(64), run, {}, 4);
  int64_t blocks = 0, tokens = 0;
  for (const auto& c : p.chunks) {
    blocks += c.new_blocks;
    tokens += c.num_tokens;
  }
  EXPECT_LE(blocks, 4 + 1 * static_cast<int64_t>(p.preempted.size()));
  EXPECT_LE(tokens, 64);
  for (int64_t id : p.preempted) EXPECT_EQ(Find(p, id), nullptr);
}

TEST(Scheduler, RespectsMaxRunning) {
  std::vector<SchedSeq> run = {Running(1, 17, 16, 2), Running(2, 17, 16, 2)};
  SchedulePlan p = Schedule(Cfg(64, 2), run, {Waiting(3, 5)}, 100);
  EXPECT_TRUE(p.admitted.empty());
}

TEST(Scheduler, HeadOfLineIsNotOvertakenSoLargeRequestsDoNotStarve) {
  // The head needs 4 blocks, only 3 free: the small one behind it must wait too.
  SchedulePlan p = Schedule(Cfg(64), {}, {Waiting(1, 64), Waiting(2, 4)}, 3);
  EXPECT_TRUE(p.admitted.empty());
}

TEST(Scheduler, PriorityFirstThenAgingLetsOldLowPriorityRun) {
  SchedulerConfig c = Cfg(16);
  std::vector<SchedSeq> w = {Waiting(1, 16, 0), Waiting(2, 16, 5)};
  SchedulePlan p = Schedule(c, {}, w, 100);
  ASSERT_EQ(p.admitted.size(), 1u);
  EXPECT_EQ(p.admitted[0], 2);  // higher priority first
  c.aging_steps = 10;
  w[0].waited_steps = 60;  // +6 effective priority
  p = Schedule(c, {}, w, 100);
  ASSERT_EQ(p.admitted.size(), 1u);
  EXPECT_EQ(p.admitted[0], 1);
}

TEST(Scheduler, PrefixHitsReduceWorkAndBlocks) {
  SchedSeq w = Waiting(1, 40);
  w.prefix_hit_tokens = 32;  // two cached blocks
  w.prefix_hit_blocks_free = 2;
  SchedulePlan p = Schedule(Cfg(64), {}, {w}, 3);
  ASSERT_EQ(p.admitted.size(), 1u);
  EXPECT_EQ(Find(p, 1)->num_tokens, 8);
  EXPECT_EQ(Find(p, 1)->new_blocks, 1);
}

TEST(Scheduler, FullPrefixHitStillComputesTheLastToken) {
  SchedSeq w = Waiting(1, 32);
  w.prefix_hit_tokens = 32;
  SchedulePlan p = Schedule(Cfg(64), {}, {w}, 10);
  ASSERT_EQ(p.admitted.size(), 1u);
  EXPECT_EQ(Find(p, 1)->num_tokens, 16);  // block 2 recomputed so the last token has logits
}

TEST(Scheduler, WatermarkHoldsBackAdmission) {
  SchedulerConfig c = Cfg(64);
  c.watermark_blocks = 2;
  EXPECT_TRUE(Schedule(c, {}, {Waiting(1, 16)}, 2).admitted.empty());
  EXPECT_EQ(Schedule(c, {}, {Waiting(1, 16)}, 3).admitted.size(), 1u);
}

TEST(Scheduler, NeverPlansMoreBlocksThanFree) {
  // Randomised invariant check over many states.
  uint64_t s = 42;
  auto rnd = [&](int m) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int>((s >> 33) % m);
  };
  for (int iter = 0; iter < 2000; ++iter) {
    std::vector<SchedSeq> run, wait;
    const int nr = rnd(6), nw = rnd(6);
    for (int i = 0; i < nr; ++i) {
      const int tokens = 1 + rnd(100);
      const int computed = rnd(tokens);
      run.push_back(Running(i, tokens, computed, (computed + 15) / 16));
    }
    for (int i = 0; i < nw; ++i) wait.push_back(Waiting(100 + i, 1 + rnd(100)));
    const int64_t free = rnd(12);
    SchedulePlan p = Schedule(Cfg(1 + rnd(80), 1 + rnd(8)), run, wait, free);
    int64_t freed = 0;
    for (int64_t id : p.preempted) {
      for (const auto& r : run) {
        if (r.id == id) freed += r.blocks_held;
      }
    }
    int64_t used = 0, tokens = 0;
    for (const auto& c : p.chunks) {
      used += c.new_blocks;
      tokens += c.num_tokens;
      EXPECT_GT(c.num_tokens, 0);
    }
    EXPECT_LE(used, free + freed) << "iteration " << iter;
    EXPECT_EQ(tokens, p.batch_tokens);
  }
}

}  // namespace
}  // namespace compressd
