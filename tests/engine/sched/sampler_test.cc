#include "engine/sched/sampler.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/ops.h"

namespace compressd {
namespace {

std::vector<float> Logits() { return {1.0f, 3.0f, 2.0f, 0.5f, 2.9f, -1.0f}; }

int Sample(SamplingParams p, uint64_t seed, std::vector<float> lg = Logits(),
           const std::vector<int32_t>& ctx = {},
           const absl::flat_hash_map<int32_t, int32_t>& counts = {}) {
  Sampler s(p, seed);
  return s.Sample(lg.data(), static_cast<int32_t>(lg.size()), ctx, counts, -1).token;
}

TEST(Sampler, GreedyPicksArgmax) {
  SamplingParams p;
  p.temperature = 0;
  EXPECT_EQ(Sample(p, 1), 1);
}

TEST(Sampler, SameSeedSameTokensDifferentSeedsDiffer) {
  SamplingParams p;
  p.temperature = 1.5f;
  std::vector<int> a, b, c;
  Sampler s1(p, 7), s2(p, 7), s3(p, 8);
  for (int i = 0; i < 64; ++i) {
    auto l1 = Logits(), l2 = Logits(), l3 = Logits();
    a.push_back(s1.Sample(l1.data(), 6, {}, {}, -1).token);
    b.push_back(s2.Sample(l2.data(), 6, {}, {}, -1).token);
    c.push_back(s3.Sample(l3.data(), 6, {}, {}, -1).token);
  }
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST(Sampler, TopKOneIsGreedy) {
  SamplingParams p;
  p.temperature = 5;
  p.top_k = 1;
  for (uint64_t s = 0; s < 50; ++s) EXPECT_EQ(Sample(p, s), 1);
}

TEST(Sampler, TopKTwoOnlyReturnsTheTwoBest) {
  SamplingParams p;
  p.temperature = 10;
  p.top_k = 2;
  for (uint64_t s = 0; s < 200; ++s) {
    const int t = Sample(p, s);
    EXPECT_TRUE(t == 1 || t == 4) << t;
  }
}

TEST(Sampler, TopPKeepsTheSmallestNucleus) {
  SamplingParams p;
  p.temperature = 1;
  p.top_p = 0.5f;  // token 1 alone has ~0.37; with token 4 (~0.33) the mass passes 0.5
  for (uint64_t s = 0; s < 200; ++s) {
    const int t = Sample(p, s);
    EXPECT_TRUE(t == 1 || t == 4) << t;
  }
}

TEST(Sampler, MinPDropsUnlikelyTokens) {
  SamplingParams p;
  p.temperature = 1;
  p.min_p = 0.5f;  // keep tokens with prob >= 0.5 * p(best): tokens 1, 4 and 2 (e^-1 = 0.37 < 0.5: no)
  for (uint64_t s = 0; s < 200; ++s) {
    const int t = Sample(p, s);
    EXPECT_TRUE(t == 1 || t == 4) << t;
  }
}

TEST(Sampler, RepetitionPenaltyChangesGreedyChoice) {
  SamplingParams p;
  p.temperature = 0;
  p.repetition_penalty = 2.0f;  // 3.0 -> 1.5 for token 1
  EXPECT_EQ(Sample(p, 1, Logits(), {1}), 4);
}

TEST(Sampler, PresenceAndFrequencyPenalties) {
  SamplingParams p;
  p.temperature = 0;
  p.frequency_penalty = 0.2f;
  absl::flat_hash_map<int32_t, int32_t> counts = {{1, 1}};
  EXPECT_EQ(Sample(p, 1, Logits(), {}, counts), 4);  // 3.0 - 0.2 < 2.9
  p.frequency_penalty = 0;
  p.presence_penalty = 0.05f;
  EXPECT_EQ(Sample(p, 1, Logits(), {}, counts), 1);  // 2.95 > 2.9
}

TEST(Sampler, LogprobsAreNormalisedAndTopNSorted) {
  SamplingParams p;
  p.temperature = 0;
  Sampler s(p, 1);
  auto lg = Logits();
  SampleResult r = s.Sample(lg.data(), 6, {}, {}, 3);
  ASSERT_EQ(r.top.size(), 3u);
  EXPECT_EQ(r.top[0].token_id, 1);
  EXPECT_GE(r.top[0].logprob, r.top[1].logprob);
  double z = 0;
  for (float v : Logits()) z += std::exp(v);
  EXPECT_NEAR(r.logprob, 3.0 - std::log(z), 1e-5);
}

TEST(Sampler, ValidationNamesTheField) {
  SamplingParams p;
  p.temperature = -1;
  absl::Status st = ValidateSamplingParams(p, 100);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("temperature"), std::string::npos);
  p = SamplingParams();
  p.top_p = NAN;
  EXPECT_NE(ValidateSamplingParams(p, 100).message().find("top_p"), std::string::npos);
  p = SamplingParams();
  p.top_k = 101;
  EXPECT_NE(ValidateSamplingParams(p, 100).message().find("top_k"), std::string::npos);
  EXPECT_TRUE(ValidateSamplingParams(SamplingParams(), 100).ok());
}

TEST(Sampler, LargeVocabularyWithTopPSortsOnlyTheHead) {
  // 100k-entry vocabulary, peaked: must pick among the few head tokens.
  std::vector<float> lg(100000, -10.0f);
  lg[5] = 10;
  lg[77] = 9.5f;
  SamplingParams p;
  p.temperature = 1;
  p.top_p = 0.9f;
  for (uint64_t s = 0; s < 20; ++s) {
    const int t = Sample(p, s, lg);
    EXPECT_TRUE(t == 5 || t == 77) << t;
  }
}


// KeptTokens (sorts only the candidates above a falling cut) against the full sort, over
// peaked, flat and tied distributions and every filter combination.
TEST(Sampler, KeptTokensMatchesTheFullSort) {
  std::mt19937 rng(3);
  for (int trial = 0; trial < 60; ++trial) {
    const int32_t V = 1 + static_cast<int32_t>(rng() % 5000);
    std::vector<float> p(V);
    const int kind = trial % 4;
    std::normal_distribution<float> n(0.0f, kind == 0 ? 0.01f : (kind == 1 ? 1.0f : 4.0f));
    for (auto& x : p) x = kind == 3 ? static_cast<float>(rng() % 3) : n(rng);  // 3: many ties
    kernels::SoftmaxInPlace(p.data(), V);
    for (int top_k : {0, 1, 2, 40, 1000, V}) {
      for (float top_p : {0.0f, 0.1f, 0.5f, 0.9f, 0.999f}) {
        for (float min_p : {0.0f, 0.01f, 0.3f}) {
          SamplingParams sp;
          sp.temperature = 1;
          sp.top_k = top_k;
          sp.top_p = top_p;
          sp.min_p = min_p;
          EXPECT_EQ(KeptTokens(p.data(), V, sp), KeptTokensRef(p.data(), V, sp))
              << "V=" << V << " kind=" << kind << " top_k=" << top_k << " top_p=" << top_p
              << " min_p=" << min_p;
        }
      }
    }
  }
}

// Sampling follows the kept distribution: with top-p 0.9 over a known distribution, the
// empirical frequencies of 20,000 draws match the renormalised probabilities.
TEST(Sampler, TopPDrawsFollowTheKeptDistribution) {
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f),
                                     std::log(0.05f)};
  SamplingParams p;
  p.temperature = 1;
  p.top_p = 0.9f;  // keeps 0.5, 0.3, 0.15 (mass 0.95); renormalised 0.526, 0.316, 0.158
  Sampler s(p, 11);
  std::vector<int> seen(4, 0);
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    std::vector<float> l = logits;
    ++seen[s.Sample(l.data(), 4, {}, {}, -1).token];
  }
  EXPECT_EQ(seen[3], 0);
  EXPECT_NEAR(seen[0] / double(n), 0.5 / 0.95, 0.015);
  EXPECT_NEAR(seen[1] / double(n), 0.3 / 0.95, 0.015);
  EXPECT_NEAR(seen[2] / double(n), 0.15 / 0.95, 0.015);
}

}  // namespace
}  // namespace compressd
