// KV pressure ladder: which blocks of a sequence the first ladder step (recompression, before
// preemption) may merge. A pure function over block metadata, unit-tested without a cache.
//
// Ladder (scheduler.h): when a running sequence needs a block and none is free, the scheduler
// first demotes cold blocks (KvCodec::Demote: two adjacent blocks re-encoded at half the bits
// into one, freeing the other), and preempts (recompute) only when demotion cannot free enough.
//
// A pair (i, i + 1) of a sequence's block table is mergeable when both blocks
// - are not demoted already (one level: int8 -> int4, int4 -> int2; never twice),
// - are not shared (refcount 1; a block another sequence reads must keep its bytes),
// - are full and computed (sealed), and cold: not among the newest `hot_blocks` full blocks
//   (the tail block being filled is never full, so never a candidate either), and not among
//   the first `sink_blocks` blocks (attention sinks: the first tokens draw a large share of
//   attention in every layer, so their precision matters more than their age suggests).
// Pairs are taken oldest first, without overlap. A block registered in the prefix cache may
// be merged; the caller unregisters it first (its bytes change).
#pragma once

#include <cstdint>
#include <vector>

namespace compressd {

struct LadderBlock {
  bool demoted = false;  // holds 2 * block_size tokens already
  bool shared = false;   // refcount > 1
};

struct LadderConfig {
  int32_t hot_blocks = 1;   // newest full blocks kept at the base precision
  int32_t sink_blocks = 1;  // first blocks kept at the base precision
};

// table: the sequence's block table in order; full_blocks: logical blocks (block_size tokens
// each) whose tokens are all computed. Returns the table indices i of the pairs (i, i + 1) to
// merge, oldest first, at most max_merges of them.
std::vector<int32_t> PlanBlockMerges(const LadderConfig& config,
                                     const std::vector<LadderBlock>& table, int32_t full_blocks,
                                     int32_t max_merges);

}  // namespace compressd
