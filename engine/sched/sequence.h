// Sequence: the engine thread's state of one request (tokens, KV blocks, sampler, text
// streaming with stop-string hold-back, timings). Owned by the engine; never shared.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "engine/engine.h"
#include "engine/model/tokenizer.h"
#include "engine/sched/sampler.h"

namespace compressd {

using Clock = std::chrono::steady_clock;

struct Sequence {
  Sequence(int64_t id_in, GenerationRequest r, EventCallback cb, const Tokenizer& tok,
           uint64_t seed)
      : id(id_in),
        req(std::move(r)),
        callback(std::move(cb)),
        sampler(req.sampling, seed),
        decoder(tok) {}

  int64_t id;
  GenerationRequest req;
  EventCallback callback;
  std::vector<int32_t> tokens;  // prompt + generated
  int32_t prompt_len = 0;
  int32_t max_total = 0;        // prompt_len + max new tokens
  int32_t num_computed = 0;     // tokens whose KV is cached
  std::vector<int32_t> blocks;  // block table
  std::vector<uint64_t> block_hashes;  // chained hashes of full blocks (prefix cache)
  int32_t hashed_blocks = 0;    // blocks registered in the pool's prefix cache
  // Blocks of `blocks` holding two blocks' tokens (KV pressure ladder, sched/ladder.h); they all
  // precede the block being filled, so logical block i >= hashed_blocks is blocks[i - D].
  int32_t demoted_blocks = 0;
  uint64_t arrival = 0;
  int64_t waited_steps = 0;
  int32_t cached_tokens = 0;
  int32_t preemptions = 0;
  bool admitted_once = false;
  bool cancelled = false;
  uint64_t peak_kv_bytes = 0;

  Sampler sampler;
  absl::flat_hash_map<int32_t, int32_t> counts;  // generated token -> occurrences
  StreamDecoder decoder;
  std::string held;  // decoded text not yet emitted (stop-string hold-back)

  Clock::time_point submitted = Clock::now();
  Clock::time_point admitted;
  Clock::time_point first_token;
  bool has_first_token = false;

  int32_t generated() const { return static_cast<int32_t>(tokens.size()) - prompt_len; }
};

}  // namespace compressd
