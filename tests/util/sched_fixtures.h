// Scheduler test fixtures (engine/sched/scheduler.h), shared by the scheduler, ladder and
// per-request KV codec tests: SchedSeq builders and a random set of running and waiting
// sequences for the randomised block-accounting invariants.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "engine/sched/scheduler.h"

namespace compressd::testing {

// A running sequence (arrival = id): `computed` of `tokens` have K/V in `blocks` blocks, of
// which `demotable` could be demoted now; `eager`: its request asked for the smaller codec.
inline SchedSeq Running(int64_t id, int32_t tokens, int32_t computed, int32_t blocks,
                        int32_t demotable = 0, bool eager = false) {
  SchedSeq s;
  s.id = id;
  s.arrival = static_cast<uint64_t>(id);
  s.num_tokens = tokens;
  s.num_computed = computed;
  s.blocks_held = blocks;
  s.demotable_blocks = demotable;
  s.eager_demotion = eager;
  return s;
}

// A waiting sequence (arrival = id).
inline SchedSeq Waiting(int64_t id, int32_t tokens, int32_t priority = 0) {
  SchedSeq s;
  s.id = id;
  s.arrival = static_cast<uint64_t>(id);
  s.num_tokens = tokens;
  s.priority = priority;
  return s;
}

struct RandomSchedState {
  std::vector<SchedSeq> running;  // ids 1..n: running[id - 1]
  std::vector<SchedSeq> waiting;  // ids 100..
};

// 1-6 running sequences (block size 16; up to 200 computed tokens, some with a prompt chunk
// left, some blocks already demoted, demotable in [0, demotable_below), eager at random when
// `random_eager`) and 0-2 waiting ones of 1-60 tokens.
inline RandomSchedState RandomSchedStateOf(std::mt19937& rng, int32_t demotable_below,
                                           bool random_eager) {
  RandomSchedState st;
  const int n = 1 + static_cast<int>(rng() % 6);
  for (int i = 0; i < n; ++i) {
    const int32_t computed = static_cast<int32_t>(rng() % 200);
    const int32_t tokens = computed + 1 + static_cast<int32_t>(rng() % 3 == 0 ? rng() % 80 : 0);
    const int32_t logical = (computed + 15) / 16;
    const int32_t demoted = logical > 0 ? static_cast<int32_t>(rng() % (logical / 2 + 1)) : 0;
    const int32_t demotable = static_cast<int32_t>(rng() % demotable_below);
    const bool eager = random_eager && rng() % 2 == 0;
    SchedSeq s = Running(i + 1, tokens, computed, logical - demoted, demotable, eager);
    s.demoted_blocks = demoted;
    st.running.push_back(s);
  }
  const int w = static_cast<int>(rng() % 3);
  for (int i = 0; i < w; ++i) {
    st.waiting.push_back(Waiting(100 + i, 1 + static_cast<int32_t>(rng() % 60)));
  }
  return st;
}

}  // namespace compressd::testing
