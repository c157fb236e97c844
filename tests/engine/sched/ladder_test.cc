// The KV pressure ladder as pure policy: which blocks a sequence may merge (PlanBlockMerges)
// and how Schedule() demotes before it preempts.
#include "engine/sched/ladder.h"

#include <algorithm>
#include <random>

#include "engine/sched/scheduler.h"
#include "gtest/gtest.h"
#include "tests/util/sched_fixtures.h"

namespace compressd {
namespace {

std::vector<LadderBlock> Table(int n) { return std::vector<LadderBlock>(n); }

TEST(Ladder, MergesOldestColdPairsSkippingSinkAndHotBlocks) {
  // 10 blocks, all full except the last (being filled): 9 full. Sink: block 0. Hot: block 8.
  // Cold blocks 1..7: pairs (1,2), (3,4), (5,6); 7 alone.
  const auto m = PlanBlockMerges(LadderConfig{}, Table(10), 9, 100);
  EXPECT_EQ(m, (std::vector<int32_t>{1, 3, 5}));
  // At most max_merges, oldest first.
  EXPECT_EQ(PlanBlockMerges(LadderConfig{}, Table(10), 9, 2), (std::vector<int32_t>{1, 3}));
}

TEST(Ladder, NeverTouchesTailHotOrUncomputedBlocks) {
  // 4 blocks with 2 full: block 1 is hot, blocks 2-3 are not computed: nothing.
  EXPECT_TRUE(PlanBlockMerges(LadderConfig{}, Table(4), 2, 100).empty());
  // Without sink and hot blocks, only the full ones pair up.
  LadderConfig none;
  none.hot_blocks = 0;
  none.sink_blocks = 0;
  EXPECT_EQ(PlanBlockMerges(none, Table(4), 2, 100), (std::vector<int32_t>{0}));
  EXPECT_TRUE(PlanBlockMerges(none, Table(4), 1, 100).empty());
}

TEST(Ladder, NeverMergesSharedOrDemotedBlocks) {
  auto t = Table(10);
  t[1].shared = t[2].shared = true;  // a shared prefix (another sequence reads them)
  t[3].shared = false;
  // Cold logical range [1, 8): pairs among 3..7 only: (3,4), (5,6).
  EXPECT_EQ(PlanBlockMerges(LadderConfig{}, t, 9, 100), (std::vector<int32_t>{3, 5}));
  // After demotion: table [0, D(1,2), 3, 4, ...]: the demoted block counts two logical blocks
  // and is never merged again.
  auto d = Table(9);
  d[1].demoted = true;
  // 9 entries = 10 logical blocks, 9 full: cold logical [1, 8) -> table 3..6 = logical 4..7.
  EXPECT_EQ(PlanBlockMerges(LadderConfig{}, d, 9, 100), (std::vector<int32_t>{2, 4}));
  // A shared block between candidates breaks pairs around it.
  auto s = Table(10);
  s[3].shared = true;
  EXPECT_EQ(PlanBlockMerges(LadderConfig{}, s, 9, 100), (std::vector<int32_t>{1, 4, 6}));
}

using testing::Running;

SchedulerConfig Cfg() {
  SchedulerConfig c;
  c.block_size = 16;
  c.max_batch_tokens = 64;
  c.max_running = 8;
  return c;
}

int32_t Demoted(const SchedulePlan& p, int64_t id) {
  for (const auto& d : p.demotions) {
    if (d.id == id) return d.merges;
  }
  return 0;
}

TEST(SchedulerLadder, DemotesBeforeItPreempts) {
  // Two decodes at a block boundary (each needs one block), nothing free. Both can demote.
  const std::vector<SchedSeq> run = {Running(1, 65, 64, 4, 1), Running(2, 65, 64, 4, 1)};
  SchedulePlan p = Schedule(Cfg(), run, {}, 0);
  EXPECT_TRUE(p.preempted.empty());
  EXPECT_EQ(p.chunks.size(), 2u);
  // Newest first: sequence 2 gives its block for sequence 1, then its own... it has one.
  // Then sequence 1's own demotion covers sequence 2.
  EXPECT_EQ(Demoted(p, 2), 1);
  EXPECT_EQ(Demoted(p, 1), 1);
}

TEST(SchedulerLadder, DemotesOnlyWhatIsNeededNewestFirst) {
  const std::vector<SchedSeq> run = {Running(1, 65, 64, 4, 3), Running(2, 40, 39, 3, 3)};
  // Sequence 1 needs one block; sequence 2 needs none.
  SchedulePlan p = Schedule(Cfg(), run, {}, 0);
  EXPECT_TRUE(p.preempted.empty());
  ASSERT_EQ(p.demotions.size(), 1u);
  EXPECT_EQ(p.demotions[0].id, 2);
  EXPECT_EQ(p.demotions[0].merges, 1);
}

TEST(SchedulerLadder, NoDemotionWithoutPressure) {
  const std::vector<SchedSeq> run = {Running(1, 65, 64, 4, 3)};
  SchedulePlan p = Schedule(Cfg(), run, {}, 1);
  EXPECT_TRUE(p.demotions.empty());
  EXPECT_TRUE(p.preempted.empty());
}

TEST(SchedulerLadder, PreemptsWhenNothingIsLeftToDemote) {
  const std::vector<SchedSeq> run = {Running(1, 65, 64, 4, 0), Running(2, 65, 64, 4, 0)};
  SchedulePlan p = Schedule(Cfg(), run, {}, 0);
  EXPECT_TRUE(p.demotions.empty());
  ASSERT_EQ(p.preempted.size(), 1u);
  EXPECT_EQ(p.preempted[0], 2);
}

TEST(SchedulerLadder, PreemptsOnlyAfterExhaustingDemotionAndDropsTheVictimsDemotions) {
  // Sequence 1 needs 3 blocks (a 48-token chunk), sequence 2 can free 1 by demotion: not
  // enough, so 2 is preempted and its planned demotion dropped (its blocks all come back).
  const std::vector<SchedSeq> run = {Running(1, 112, 64, 4, 0), Running(2, 65, 64, 4, 1)};
  SchedulePlan p = Schedule(Cfg(), run, {}, 0);
  ASSERT_EQ(p.preempted.size(), 1u);
  EXPECT_EQ(p.preempted[0], 2);
  EXPECT_EQ(Demoted(p, 2), 0);
  ASSERT_EQ(p.chunks.size(), 1u);
  EXPECT_EQ(p.chunks[0].new_blocks, 3);
}

TEST(SchedulerLadder, DemotedBlocksCountTowardsCoverage) {
  // 8 logical blocks of tokens held as 6 physical blocks, 2 of them demoted: a decode at
  // position 120 (block 7) needs nothing new.
  SchedSeq s = Running(1, 121, 120, 6);
  s.demoted_blocks = 2;
  SchedulePlan p = Schedule(Cfg(), {s}, {}, 0);
  ASSERT_EQ(p.chunks.size(), 1u);
  EXPECT_EQ(p.chunks[0].new_blocks, 0);
  EXPECT_TRUE(p.preempted.empty());
}

TEST(SchedulerLadder, NothingIsAdmittedInAStepThatDemoted) {
  SchedSeq w;
  w.id = 9;
  w.arrival = 9;
  w.num_tokens = 4;
  SchedulePlan p = Schedule(Cfg(), {Running(1, 65, 64, 4, 2)}, {w}, 0);
  EXPECT_EQ(Demoted(p, 1), 1);
  EXPECT_TRUE(p.admitted.empty());
}

TEST(SchedulerLadder, RandomisedNeverPlansMoreBlocksThanFreedAndNeverOverDemotes) {
  std::mt19937 rng(5);
  for (int iter = 0; iter < 3000; ++iter) {
    const testing::RandomSchedState st = testing::RandomSchedStateOf(rng, 4, false);
    const std::vector<SchedSeq>& run = st.running;
    const std::vector<SchedSeq>& wait = st.waiting;
    const int64_t free = rng() % 4;
    SchedulePlan p = Schedule(Cfg(), run, wait, free);
    int64_t freed = free, planned = 0;
    for (const auto& c : p.chunks) planned += c.new_blocks;
    for (int64_t id : p.preempted) freed += run[id - 1].blocks_held;
    for (const auto& d : p.demotions) {
      EXPECT_LE(d.merges, run[d.id - 1].demotable_blocks);
      EXPECT_GT(d.merges, 0);
      EXPECT_EQ(std::count(p.preempted.begin(), p.preempted.end(), d.id), 0)
          << "demotes a preempted sequence";
      freed += d.merges;
    }
    EXPECT_LE(planned, freed) << "iteration " << iter;
    if (!p.preempted.empty()) {
      // Preemption only when every surviving sequence's demotions were used up.
      for (const auto& s : run) {
        if (std::count(p.preempted.begin(), p.preempted.end(), s.id)) continue;
        EXPECT_EQ(Demoted(p, s.id), s.demotable_blocks) << "iteration " << iter;
      }
    }
  }
}

}  // namespace
}  // namespace compressd
