// Workload: the list of requests a load test sends, either read from a JSONL dataset or
// synthesised from length distributions. Pure and deterministic for a given seed; no gRPC.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace compressd::loadtest {

// A distribution of lengths in tokens (synthetic prompts approximate one token per word).
//   "fixed:N" | "N"            always N
//   "uniform:LO,HI"            integers in [LO, HI], inclusive
//   "normal:MEAN,STDDEV"       rounded and clamped to [1, 2*MEAN]
struct LengthDist {
  enum class Kind { kFixed, kUniform, kNormal };
  Kind kind = Kind::kFixed;
  double a = 128;  // fixed value, uniform low, or normal mean
  double b = 0;    // uniform high or normal stddev

  // Draws one length, always >= 1.
  int Sample(std::mt19937_64& rng) const;
  std::string ToString() const;
};

absl::StatusOr<LengthDist> ParseLengthDist(absl::string_view spec);

struct WorkItem {
  std::string prompt;
  uint32_t max_tokens = 0;
  // Words in a synthetic prompt (0 for dataset items; the server reports real token counts).
  int prompt_words = 0;
};

// Reads one JSON object per line: {"prompt": "...", "max_tokens": N}. Blank lines are skipped;
// `max_tokens` is optional (default_max_tokens is used when absent). Errors name the line.
absl::StatusOr<std::vector<WorkItem>> LoadDataset(const std::string& path,
                                                  uint32_t default_max_tokens);
absl::StatusOr<std::vector<WorkItem>> ParseDataset(absl::string_view jsonl,
                                                   uint32_t default_max_tokens);

// Builds a prompt of exactly `words` space-separated words drawn from a fixed vocabulary.
std::string BuildPrompt(int words, std::mt19937_64& rng);

// `n` synthetic requests; same seed, same list.
std::vector<WorkItem> SyntheticWorkload(int n, const LengthDist& input_len,
                                        const LengthDist& output_len, uint64_t seed);

// Returns `count` items, cycling through `items` (a dataset smaller than the run repeats).
std::vector<WorkItem> CycleTo(const std::vector<WorkItem>& items, int count);

}  // namespace compressd::loadtest
