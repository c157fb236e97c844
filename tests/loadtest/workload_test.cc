#include "loadtest/workload.h"

#include <cmath>
#include <numeric>
#include <vector>

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "loadtest/options.h"

namespace compressd::loadtest {
namespace {

TEST(LengthDistTest, Parses) {
  auto f = ParseLengthDist("fixed:64");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->kind, LengthDist::Kind::kFixed);
  EXPECT_EQ(f->a, 64);
  auto bare = ParseLengthDist("32");
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(bare->a, 32);
  auto u = ParseLengthDist("uniform:8,16");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->kind, LengthDist::Kind::kUniform);
  auto n = ParseLengthDist("normal:100,10");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->kind, LengthDist::Kind::kNormal);
  EXPECT_EQ(n->ToString(), "normal:100,10");
}

TEST(LengthDistTest, RejectsBadSpecs) {
  for (const char* bad : {"", "fixed:", "fixed:0", "uniform:9,3", "uniform:4", "normal:10,-1",
                          "poisson:3", "fixed:abc", "fixed:nan"}) {
    EXPECT_FALSE(ParseLengthDist(bad).ok()) << bad;
  }
}

TEST(LengthDistTest, SamplesStayInRange) {
  std::mt19937_64 rng(5);
  LengthDist u = *ParseLengthDist("uniform:3,7");
  LengthDist n = *ParseLengthDist("normal:20,50");
  std::vector<int> seen(8, 0);
  double sum = 0;
  for (int i = 0; i < 5000; ++i) {
    const int x = u.Sample(rng);
    ASSERT_GE(x, 3);
    ASSERT_LE(x, 7);
    ++seen[x];
    const int y = n.Sample(rng);
    ASSERT_GE(y, 1);
    ASSERT_LE(y, 40);
    sum += (*ParseLengthDist("normal:200,20")).Sample(rng);
  }
  for (int v = 3; v <= 7; ++v) EXPECT_GT(seen[v], 800) << v;  // every value, roughly evenly
  EXPECT_NEAR(sum / 5000, 200, 2);
}

TEST(WorkloadTest, SyntheticPromptsHaveTheRequestedWordCounts) {
  auto items =
      SyntheticWorkload(50, *ParseLengthDist("uniform:1,40"), *ParseLengthDist("fixed:17"), 9);
  ASSERT_EQ(items.size(), 50u);
  for (const WorkItem& w : items) {
    std::vector<std::string> words = absl::StrSplit(w.prompt, ' ');
    EXPECT_EQ(static_cast<int>(words.size()), w.prompt_words);
    EXPECT_EQ(w.max_tokens, 17u);
  }
}

TEST(WorkloadTest, DeterministicPerSeed) {
  const LengthDist in = *ParseLengthDist("normal:30,5");
  const LengthDist out = *ParseLengthDist("uniform:1,9");
  auto a = SyntheticWorkload(20, in, out, 1);
  auto b = SyntheticWorkload(20, in, out, 1);
  auto c = SyntheticWorkload(20, in, out, 2);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].prompt, b[i].prompt);
    EXPECT_EQ(a[i].max_tokens, b[i].max_tokens);
  }
  EXPECT_NE(a[0].prompt + a[1].prompt, c[0].prompt + c[1].prompt);
}

TEST(DatasetTest, ParsesJsonl) {
  auto items = ParseDataset(
      "{\"prompt\": \"hello\", \"max_tokens\": 5}\n\n{\"prompt\": \"caf\\u00e9\"}\n", 99);
  ASSERT_TRUE(items.ok()) << items.status();
  ASSERT_EQ(items->size(), 2u);
  EXPECT_EQ((*items)[0].prompt, "hello");
  EXPECT_EQ((*items)[0].max_tokens, 5u);
  EXPECT_EQ((*items)[1].prompt, "caf\xc3\xa9");
  EXPECT_EQ((*items)[1].max_tokens, 99u);
}

TEST(DatasetTest, ErrorsNameTheLine) {
  auto bad = ParseDataset("{\"prompt\": \"a\"}\n{\"prompt\": 3}\n", 1);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("line 2"), std::string::npos) << bad.status();
  EXPECT_FALSE(ParseDataset("not json\n", 1).ok());
  EXPECT_FALSE(ParseDataset("{\"prompt\": \"a\", \"max_tokens\": -1}\n", 1).ok());
  EXPECT_FALSE(ParseDataset("\n\n", 1).ok());
  EXPECT_FALSE(LoadDataset("/nonexistent/file.jsonl", 1).ok());
}

TEST(DatasetTest, CycleRepeatsAShortDataset) {
  std::vector<WorkItem> two(2);
  two[0].prompt = "a";
  two[1].prompt = "b";
  auto five = CycleTo(two, 5);
  ASSERT_EQ(five.size(), 5u);
  EXPECT_EQ(five[4].prompt, "a");
  EXPECT_TRUE(CycleTo({}, 3).empty());
}

TEST(OptionsTest, ParsesSloAndSweep) {
  auto slo = ParseSlo("ttft:500,tpot:50");
  ASSERT_TRUE(slo.ok());
  EXPECT_EQ(slo->ttft_ms, 500);
  EXPECT_EQ(slo->tpot_ms, 50);
  EXPECT_FALSE(ParseSlo("ttft:-1").ok());
  EXPECT_FALSE(ParseSlo("itl:5").ok());
  EXPECT_FALSE(ParseSlo("ttft").ok());
  EXPECT_FALSE(ParseSlo("").value().enabled());
  auto sweep = ParseSweep("rates=1,2,4.5,8");
  ASSERT_TRUE(sweep.ok());
  EXPECT_EQ(sweep->mode, LoadMode::kOpenLoop);
  EXPECT_EQ(sweep->values, (std::vector<double>{1, 2, 4.5, 8}));
  EXPECT_EQ(ParseSweep("concurrency=1,4")->mode, LoadMode::kClosedLoop);
  EXPECT_FALSE(ParseSweep("concurrency=1.5").ok());
  EXPECT_FALSE(ParseSweep("rates=").ok());
  EXPECT_FALSE(ParseSweep("rates=1,-2").ok());
  EXPECT_FALSE(ParseSweep("speed=1").ok());
}

TEST(OptionsTest, NormalizesHyphenatedFlagNamesOnly) {
  std::vector<std::string> args = {
      "prog", "--request-rate=2", "--num-requests", "5", "--dataset=my-file.jsonl", "compare",
      "--",   "--not-a-flag"};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  std::vector<std::string> out = NormalizeFlagNames(static_cast<int>(argv.size()), argv.data());
  EXPECT_EQ(out[1], "--request_rate=2");
  EXPECT_EQ(out[2], "--num_requests");
  EXPECT_EQ(out[4], "--dataset=my-file.jsonl");
  EXPECT_EQ(out[5], "compare");
  EXPECT_EQ(out[7], "--not-a-flag");
}

}  // namespace
}  // namespace compressd::loadtest
