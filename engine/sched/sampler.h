// Sampler: logits -> next token for one sequence, with penalties, temperature, top-k,
// top-p, min-p and a per-request RNG (same seed => same tokens on the same build and CPU:
// probabilities come from the vectorised softmax). Pure apart from the RNG state it is
// handed; one Sampler is used by one thread at a time (scratch is thread_local).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "engine/engine.h"

namespace compressd {

struct SampleResult {
  int32_t token = 0;
  float logprob = 0.0f;                // of the chosen token under the final distribution
  std::vector<TokenLogprob> top;       // top-n of the (penalised) log-softmax
};

class Sampler {
 public:
  Sampler(const SamplingParams& params, uint64_t seed);

  // logits: [vocab] (modified in place). counts: occurrences of each generated token (for
  // presence/frequency penalties); context: prompt + generated (repetition penalty).
  SampleResult Sample(float* logits, int32_t vocab, const std::vector<int32_t>& context,
                      const absl::flat_hash_map<int32_t, int32_t>& counts, int top_n);

 private:
  SamplingParams p_;
  std::mt19937_64 rng_;
};

// The ids (ascending) that top-k, then min-p, then top-p keep from probabilities p[0..vocab)
// (summing to 1), each filter taking a prefix of the order "most likely first, ties: lower id
// first" (top-p: the shortest prefix whose running double sum, in that order, reaches top_p);
// at least one. KeptTokens selects without sorting the vocabulary (O(vocab): the few
// candidates near the top when the distribution is peaked, else a histogram of the
// probabilities' bits with exact per-bucket sums) and returns exactly KeptTokensRef's answer;
// KeptTokensRef sorts the whole vocabulary (test oracle).
std::vector<int32_t> KeptTokens(const float* p, int32_t vocab, const SamplingParams& params);
std::vector<int32_t> KeptTokensRef(const float* p, int32_t vocab, const SamplingParams& params);

// INVALID_ARGUMENT naming the field when a value is out of its range.
absl::Status ValidateSamplingParams(const SamplingParams& p, int32_t vocab_size);

}  // namespace compressd
