#include "engine/sched/sampler.h"

#include <algorithm>
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


// KeptTokens (selection without sorting the vocabulary) against the full sort, over
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

// A plain scalar reference for the selection, written out here: sort the whole vocabulary by
// (probability descending, id ascending), then top-k, min-p (>= min_p * max) and top-p (the
// shortest prefix whose running double sum reaches top_p), each a prefix; ids ascending.
std::vector<int32_t> SortedOrder(const std::vector<float>& p) {
  std::vector<int32_t> idx(p.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int32_t>(i);
  std::sort(idx.begin(), idx.end(),
            [&](int32_t a, int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
  return idx;
}

std::vector<int32_t> ScalarKept(const std::vector<float>& p, const std::vector<int32_t>& order,
                                const SamplingParams& sp) {
  const size_t V = p.size();
  size_t keep = (sp.top_k > 0 && static_cast<size_t>(sp.top_k) < V) ? sp.top_k : V;
  if (sp.min_p > 0) {
    const float cut = sp.min_p * p[order[0]];
    size_t n = 0;
    while (n < keep && p[order[n]] >= cut) ++n;
    keep = std::max<size_t>(1, n);
  }
  if (sp.top_p > 0 && sp.top_p < 1) {
    double c = 0;
    for (size_t i = 0; i < keep; ++i) {
      c += p[order[i]];
      if (c >= sp.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  std::vector<int32_t> kept(order.begin(), order.begin() + keep);
  std::sort(kept.begin(), kept.end());
  return kept;
}

// Probability vectors of the shapes the selection treats differently: flat (every token a
// candidate), peaked (a few), ties (few distinct values), zeros (-inf logits), a long tail of
// probabilities below 2^-29 (where double sums round), and a tail all equal to the head.
std::vector<float> Probs(int kind, int32_t V, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> l(V);
  for (int32_t i = 0; i < V; ++i) {
    if (kind == 0) l[i] = 0.2f * n(rng);                                  // flat
    if (kind == 1) l[i] = 2.0f * n(rng) + (i % 997 == 5 ? 12.0f : 0.0f);  // peaked
    if (kind == 2) l[i] = static_cast<float>(rng() % 4);                  // ties
    if (kind == 3) l[i] = rng() % 3 == 0 ? -INFINITY : 0.3f * n(rng);     // zeros
    if (kind == 4) l[i] = 8.0f * n(rng);                                  // tiny tail
    if (kind == 5) l[i] = rng() % 50 == 0 ? 1.0f : 0.0f;                  // 2 values
  }
  kernels::SoftmaxInPlace(l.data(), V);
  return l;
}

TEST(Sampler, KeptTokensMatchesAScalarReferenceOnLargeVocabularies) {
  for (int32_t V : {3000, 20000, 49152}) {
    for (int kind = 0; kind < 6; ++kind) {
      const std::vector<float> p = Probs(kind, V, static_cast<uint32_t>(V + kind));
      const std::vector<int32_t> order = SortedOrder(p);
      for (int top_k : {0, 1, 40, 5000, V - 1}) {
        for (float top_p : {0.0f, 0.1f, 0.5f, 0.9f, 0.999f, 0.99999f}) {
          for (float min_p : {0.0f, 0.01f, 0.3f}) {
            SamplingParams sp;
            sp.temperature = 1;
            sp.top_k = top_k;
            sp.top_p = top_p;
            sp.min_p = min_p;
            ASSERT_EQ(KeptTokens(p.data(), V, sp), ScalarKept(p, order, sp))
                << "V=" << V << " kind=" << kind << " top_k=" << top_k << " top_p=" << top_p
                << " min_p=" << min_p;
          }
        }
      }
    }
  }
}

// Ties at the boundary: top-k and top-p cut through a run of equal probabilities; the lower
// ids of the run are kept.
TEST(Sampler, KeptTokensBreaksTiesByLowerId) {
  const int32_t V = 30000;
  std::vector<float> p(V, 1.0f / V);  // uniform: every token ties
  SamplingParams sp;
  sp.temperature = 1;
  sp.top_k = 7000;
  std::vector<int32_t> want(7000);
  for (int32_t i = 0; i < 7000; ++i) want[i] = i;
  EXPECT_EQ(KeptTokens(p.data(), V, sp), want);
  sp.top_k = 0;
  sp.top_p = 0.5f;
  const std::vector<int32_t> kept = KeptTokens(p.data(), V, sp);
  EXPECT_EQ(kept, ScalarKept(p, SortedOrder(p), sp));
  ASSERT_FALSE(kept.empty());
  EXPECT_EQ(kept.front(), 0);
  EXPECT_EQ(kept.back(), static_cast<int32_t>(kept.size()) - 1);
}

// Sampler::Sample against the definition written out (the sampler before the selection and the
// draw were made O(vocab) with exact reordered sums): softmax with temperature, the scalar
// reference's kept tokens, their running double sum in id order, u(0, total) from the same
// mt19937_64, the first token whose running sum exceeds the draw. Tokens and logprobs must be
// identical, draw after draw.
struct RefDraw {
  int32_t token;
  float logprob;
};
RefDraw ReferenceSample(std::vector<float> logits, const SamplingParams& sp, std::mt19937_64& rng) {
  const int32_t V = static_cast<int32_t>(logits.size());
  std::vector<float> prob(V);
  const float inv_t = 1.0f / sp.temperature;
  for (int32_t i = 0; i < V; ++i) prob[i] = logits[i] * inv_t;
  kernels::SoftmaxInPlace(prob.data(), V);
  std::vector<int32_t> kept;
  const bool filtered =
      (sp.top_k > 0 && sp.top_k < V) || (sp.top_p > 0 && sp.top_p < 1) || sp.min_p > 0;
  if (filtered) {
    kept = ScalarKept(prob, SortedOrder(prob), sp);
  } else {
    kept.resize(V);
    for (int32_t i = 0; i < V; ++i) kept[i] = i;
  }
  double total = 0;
  for (int32_t t : kept) total += prob[t];
  std::uniform_real_distribution<double> u(0.0, total);
  const double x = u(rng);
  double c = 0;
  int32_t chosen = kept.back();
  for (int32_t t : kept) {
    c += prob[t];
    if (x < c) {
      chosen = t;
      break;
    }
  }
  return {chosen, static_cast<float>(std::log(prob[chosen] / total))};
}

TEST(Sampler, SampleMatchesTheDefinitionDrawForDraw) {
  struct Case {
    float temperature, top_p, min_p;
    int top_k;
  };
  const std::vector<Case> cases = {
      {1.0f, 0, 0, 0},      {0.7f, 0.9f, 0, 0},     {0.8f, 0, 0, 40},      {1.0f, 0, 0.05f, 0},
      {1.0f, 0.95f, 0, 50}, {1.5f, 0.5f, 0.01f, 0}, {1.0f, 0.99999f, 0, 0}};
  for (int32_t V : {5000, 49152}) {
    for (int kind = 0; kind < 6; ++kind) {
      // Logits whose softmax has the shape `kind` (log of the probabilities; -inf for zeros).
      std::vector<float> logits = Probs(kind, V, static_cast<uint32_t>(7 * V + kind));
      for (float& x : logits) x = std::log(x);
      for (const Case& c : cases) {
        SamplingParams sp;
        sp.temperature = c.temperature;
        sp.top_p = c.top_p;
        sp.min_p = c.min_p;
        sp.top_k = c.top_k;
        Sampler s(sp, 1234);
        std::mt19937_64 rng(1234);
        for (int draw = 0; draw < 12; ++draw) {
          std::vector<float> l = logits;
          const SampleResult got = s.Sample(l.data(), V, {}, {}, -1);
          const RefDraw want = ReferenceSample(logits, sp, rng);
          ASSERT_EQ(got.token, want.token)
              << "V=" << V << " kind=" << kind << " T=" << c.temperature << " top_p=" << c.top_p
              << " min_p=" << c.min_p << " top_k=" << c.top_k << " draw " << draw;
          ASSERT_EQ(got.logprob, want.logprob) << "V=" << V << " kind=" << kind << " draw " << draw;
        }
      }
    }
  }
}

// Where reordered sums would not be exact (probabilities below 2^-29 among those summed), the
// selection and the draw fall back to the definitions; same answers.
TEST(Sampler, TinyProbabilitiesFallBackToTheDefinition) {
  auto check = [](const std::vector<float>& logits, SamplingParams sp, const char* what) {
    const int32_t V = static_cast<int32_t>(logits.size());
    std::vector<float> prob = logits;
    kernels::SoftmaxInPlace(prob.data(), V);
    EXPECT_EQ(KeptTokens(prob.data(), V, sp), ScalarKept(prob, SortedOrder(prob), sp)) << what;
    Sampler s(sp, 99);
    std::mt19937_64 rng(99);
    for (int draw = 0; draw < 8; ++draw) {
      std::vector<float> l = logits;
      const SampleResult got = s.Sample(l.data(), V, {}, {}, -1);
      const RefDraw want = ReferenceSample(logits, sp, rng);
      ASSERT_EQ(got.token, want.token) << what << " draw " << draw;
      ASSERT_EQ(got.logprob, want.logprob) << what << " draw " << draw;
    }
  };
  // A head of 2000 equally likely tokens and a tail of 47,152 at ~1e-10 each (mass ~5e-6):
  // top-p 0.999999 crosses inside the tail.
  std::vector<float> head_tail(49152, 0.0f);
  for (int32_t i = 0; i < 49152; ++i) head_tail[i] = i % 24 == 0 ? 0.0f : -15.5f;
  SamplingParams sp;
  sp.temperature = 1;
  sp.top_p = 0.999999f;
  check(head_tail, sp, "top-p in a tail below 2^-29");
  // Min-p with a cut below 2^-29: many kept tokens, some below 2^-29.
  sp = SamplingParams();
  sp.temperature = 1;
  sp.min_p = 1e-7f;
  for (int32_t i = 0; i < 49152; ++i) head_tail[i] = i % 24 == 0 ? 0.0f : (i % 2 ? -15.5f : -14.0f);
  check(head_tail, sp, "min-p cut below 2^-29");
  // Few candidates (a small vocabulary), some below 2^-29.
  std::vector<float> small(1000);
  std::mt19937 rng(5);
  std::normal_distribution<float> n(0.0f, 8.0f);
  for (float& x : small) x = n(rng);
  sp = SamplingParams();
  sp.temperature = 1;
  sp.min_p = 1e-30f;
  check(small, sp, "listed tokens below 2^-29");
  sp.min_p = 0;
  sp.top_p = 0.9999999f;
  check(small, sp, "listed, top-p");
}

// Not probabilities (NaN from a broken model): any answer, but in range and without a crash.
TEST(Sampler, NanProbabilitiesStayInRange) {
  for (int32_t V : {500, 30000}) {
    std::vector<float> p = Probs(0, V, 3);
    for (int32_t i = 0; i < V; i += 7) p[i] = NAN;
    for (float top_p : {0.0f, 0.5f, 0.99999f}) {
      for (float min_p : {0.0f, 0.05f}) {
        for (int top_k : {0, 40}) {
          SamplingParams sp;
          sp.temperature = 1;
          sp.top_p = top_p;
          sp.min_p = min_p;
          sp.top_k = top_k;
          for (int32_t t : KeptTokens(p.data(), V, sp)) ASSERT_TRUE(t >= 0 && t < V);
          std::vector<float> l = p;
          const int32_t t = Sampler(sp, 1).Sample(l.data(), V, {}, {}, -1).token;
          EXPECT_TRUE(t >= 0 && t < V) << t;
        }
      }
    }
  }
}

}  // namespace
}  // namespace compressd
