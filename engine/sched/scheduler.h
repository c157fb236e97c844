// Scheduling policy for continuous batching, as a pure function
//   (running + waiting sequences, free KV blocks) -> plan
// so that admission, chunked prefill, preemption and fairness are unit-tested without a
// model. The engine applies the plan (allocates/frees blocks, runs the batch).
//
// Rules:
// - Running sequences first, oldest first; decodes (1 token) before prefill chunks; all
//   under the per-step token budget (chunked prefill).
// - A running sequence that needs a new block when none is free climbs the KV pressure
//   ladder (ladder.h): first it demotes cold blocks of running sequences (each demotion
//   merges two blocks into one and frees one), taking them from the newest running sequence
//   first (its own included), the same order in which preemption picks victims, so the older
//   requests keep full precision longest and a burst of new arrivals never degrades a request
//   that is close to finishing; within a sequence, the oldest cold blocks first.
//   Only when no demotable block is left anywhere does it preempt the newest running
//   sequence (recompute: its blocks are freed, it returns to the waiting queue); if it is
//   itself the newest, it is preempted. A preempted sequence's planned demotions are dropped.
// - Waiting sequences are admitted by effective priority (priority + age / aging_steps),
//   then arrival order, while there is budget, a running slot, and blocks for their first
//   chunk above the watermark. Admission is strictly in order: a large request at the head
//   is not overtaken by smaller ones (no starvation). Nothing is admitted in a step that
//   preempted or demoted under pressure (the ladder makes room for running sequences, not
//   for new ones).
// - Requested demotions: a running sequence whose request asked for the ladder's smaller
//   codec (SchedSeq::eager_demotion, GenerationRequest::kv_cache) has its demotable pairs
//   demoted every step, without pressure, after the chunks are planned: what pressure
//   demotion left of them, oldest running sequence first, at most max_eager_demotions pairs
//   per step over all sequences (so a long prefill's backlog is spread over steps instead of
//   stalling one). They are not counted as freed blocks (the engine applies them after
//   admission, as many as are still mergeable then: an admitted request may have just
//   started sharing one of them), so no chunk or admission depends on them, and they do not
//   stop admission.
#pragma once

#include <cstdint>
#include <vector>

namespace compressd {

struct SchedulerConfig {
  int32_t block_size = 16;
  int32_t max_batch_tokens = 512;
  int32_t max_running = 64;
  int32_t watermark_blocks = 0;  // kept free at admission to absorb decode growth
  int32_t aging_steps = 0;       // 0 = no aging; else +1 priority per aging_steps waited
  int32_t max_eager_demotions = 16;  // requested demotions (block pairs) per step, all sequences
};

struct SchedSeq {
  int64_t id = 0;
  int32_t priority = 0;
  uint64_t arrival = 0;        // monotonically increasing submission order
  int64_t waited_steps = 0;
  int32_t num_tokens = 0;      // tokens known (prompt + generated)
  int32_t num_computed = 0;    // tokens whose KV is in the cache
  int32_t blocks_held = 0;     // physical blocks in its table
  // Running sequences: blocks of its table that hold two blocks' tokens (demoted), and how
  // many blocks demotion could free now (PlanBlockMerges; 0 when the ladder is off).
  int32_t demoted_blocks = 0;
  int32_t demotable_blocks = 0;
  // Its request asked for the ladder's smaller codec: demote its demotable blocks eagerly.
  bool eager_demotion = false;
  // Waiting sequences: prompt tokens the prefix cache can supply, and how many of those
  // cached blocks currently sit in the free pool (reviving them consumes free blocks).
  int32_t prefix_hit_tokens = 0;
  int32_t prefix_hit_blocks_free = 0;
};

struct ScheduledChunk {
  int64_t id = 0;
  int32_t num_tokens = 0;  // tokens to compute this step, from num_computed
  int32_t new_blocks = 0;  // blocks to allocate before running
};

struct ScheduledDemotion {
  int64_t id = 0;
  int32_t merges = 0;     // oldest mergeable pairs to demote under pressure; each frees one block
  int32_t requested = 0;  // then up to this many more, eagerly (not counted as freed)
};

struct SchedulePlan {
  std::vector<ScheduledDemotion> demotions;  // applied before the chunks' blocks are allocated
  std::vector<ScheduledChunk> chunks;  // running first (oldest first), then admitted
  std::vector<int64_t> preempted;      // running sequences to free and requeue
  std::vector<int64_t> admitted;       // waiting sequences that start this step
  int32_t batch_tokens = 0;
};

// running: in admission order (oldest first). waiting: any order. Never plans more new blocks
// than free_blocks plus what it preempts plus what it demotes.
SchedulePlan Schedule(const SchedulerConfig& config, const std::vector<SchedSeq>& running,
                      const std::vector<SchedSeq>& waiting, int64_t free_blocks);

}  // namespace compressd
