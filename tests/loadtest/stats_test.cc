#include "loadtest/stats.h"

#include <vector>

#include "gtest/gtest.h"

namespace compressd::loadtest {
namespace {

RequestRecord Ok(double start, double ttft, double e2e, int64_t out, int64_t in = 10) {
  RequestRecord r;
  r.start_s = start;
  r.ttft_s = ttft;
  r.e2e_s = e2e;
  r.output_tokens = out;
  r.prompt_tokens = in;
  for (int64_t i = 1; i < out; ++i) r.itl_s.push_back((e2e - ttft) / static_cast<double>(out - 1));
  return r;
}

RequestRecord Failed(double start, int code) {
  RequestRecord r;
  r.start_s = start;
  r.e2e_s = 0.01;
  r.status_code = code;
  r.error = "boom";
  return r;
}

TEST(PercentileTest, MatchesNumpyLinearInterpolation) {
  // numpy.percentile([1, 2, 3, 4, 10], [0, 25, 50, 90, 99, 100]) with the default method.
  const std::vector<double> v = {1, 2, 3, 4, 10};
  EXPECT_DOUBLE_EQ(Percentile(v, 0), 1.0);
  EXPECT_DOUBLE_EQ(Percentile(v, 25), 2.0);
  EXPECT_DOUBLE_EQ(Percentile(v, 50), 3.0);
  EXPECT_DOUBLE_EQ(Percentile(v, 90), 7.6);
  EXPECT_DOUBLE_EQ(Percentile(v, 99), 9.76);
  EXPECT_DOUBLE_EQ(Percentile(v, 100), 10.0);
}

TEST(PercentileTest, EdgeCases) {
  EXPECT_EQ(Percentile({}, 50), 0.0);
  EXPECT_EQ(Percentile({4.5}, 99), 4.5);
  EXPECT_DOUBLE_EQ(Percentile({1, 3}, 50), 2.0);
  EXPECT_DOUBLE_EQ(Percentile({1, 3}, 150), 3.0);  // clamped
}

TEST(LatencyStatsTest, SortsAndSummarises) {
  LatencyStats s = ComputeLatencyStats({5, 1, 4, 2, 3});
  EXPECT_EQ(s.count, 5);
  EXPECT_DOUBLE_EQ(s.mean, 3.0);
  EXPECT_DOUBLE_EQ(s.p50, 3.0);
  EXPECT_DOUBLE_EQ(s.p90, 4.6);
  EXPECT_DOUBLE_EQ(s.max, 5.0);
  EXPECT_EQ(ComputeLatencyStats({}).count, 0);
}

TEST(RequestRecordTest, TpotExcludesTheFirstToken) {
  RequestRecord r = Ok(0, 0.2, 1.2, 11);
  EXPECT_DOUBLE_EQ(r.TpotS(), 0.1);
  EXPECT_EQ(Ok(0, 0.2, 0.2, 1).TpotS(), -1);  // one token: undefined
  EXPECT_EQ(Failed(0, 14).TpotS(), -1);
}

TEST(SummarizeTest, ThroughputLatencyAndErrors) {
  std::vector<RequestRecord> rs = {Ok(0.0, 0.1, 1.1, 11), Ok(1.0, 0.3, 2.3, 21), Failed(1.5, 8),
                                   Failed(1.6, 14), Failed(1.7, 14)};
  Summary s = Summarize(rs, Slo{});
  EXPECT_EQ(s.requests, 5);
  EXPECT_EQ(s.completed, 2);
  EXPECT_EQ(s.failed, 3);
  EXPECT_DOUBLE_EQ(s.duration_s, 3.3);  // first send 0.0, last completion 1.0 + 2.3
  EXPECT_EQ(s.output_tokens, 32);
  EXPECT_EQ(s.prompt_tokens, 20);
  EXPECT_DOUBLE_EQ(s.request_throughput, 2 / 3.3);
  EXPECT_DOUBLE_EQ(s.output_token_throughput, 32 / 3.3);
  EXPECT_DOUBLE_EQ(s.total_token_throughput, 52 / 3.3);
  EXPECT_EQ(s.ttft_ms.count, 2);
  EXPECT_DOUBLE_EQ(s.ttft_ms.mean, 200.0);
  EXPECT_DOUBLE_EQ(s.ttft_ms.max, 300.0);
  EXPECT_DOUBLE_EQ(s.tpot_ms.mean, 100.0);
  EXPECT_EQ(s.itl_ms.count, 30);  // every gap of every ok request
  EXPECT_NEAR(s.itl_ms.max, 100.0, 1e-9);
  EXPECT_DOUBLE_EQ(s.e2e_ms.p50, 1700.0);
  EXPECT_EQ(s.errors_by_code.at("RESOURCE_EXHAUSTED"), 1);
  EXPECT_EQ(s.errors_by_code.at("UNAVAILABLE"), 2);
  EXPECT_FALSE(s.slo_enabled);
  EXPECT_DOUBLE_EQ(s.goodput, s.request_throughput);
}

TEST(SummarizeTest, GoodputCountsOnlyRequestsWithinEveryBound) {
  std::vector<RequestRecord> rs = {Ok(0, 0.1, 1.1, 11),  // ttft 100 ms, tpot 100 ms: meets both
                                   Ok(0, 0.6, 1.6, 11),  // ttft 600 ms: misses ttft
                                   Ok(0, 0.1, 2.1, 11),  // tpot 200 ms: misses tpot
                                   Ok(0, 0.2, 0.2, 1),   // one token: no TPOT, meets ttft
                                   Failed(0, 14)};       // errors never count
  Slo slo{500, 150};
  Summary s = Summarize(rs, slo, 2.0);
  EXPECT_TRUE(s.slo_enabled);
  EXPECT_DOUBLE_EQ(s.duration_s, 2.0);
  EXPECT_DOUBLE_EQ(s.goodput, 2 / 2.0);
  EXPECT_DOUBLE_EQ(s.slo_attainment, 2 / 5.0);
  Summary ttft_only = Summarize(rs, Slo{500, 0}, 2.0);
  EXPECT_DOUBLE_EQ(ttft_only.goodput, 3 / 2.0);
}

TEST(SummarizeTest, EmptyRunIsAllZero) {
  Summary s = Summarize({}, Slo{100, 10});
  EXPECT_EQ(s.requests, 0);
  EXPECT_EQ(s.duration_s, 0);
  EXPECT_EQ(s.request_throughput, 0);
  EXPECT_EQ(s.goodput, 0);
}

TEST(StatusCodeNameTest, KnownAndUnknown) {
  EXPECT_EQ(StatusCodeName(0), "OK");
  EXPECT_EQ(StatusCodeName(4), "DEADLINE_EXCEEDED");
  EXPECT_EQ(StatusCodeName(16), "UNAUTHENTICATED");
  EXPECT_EQ(StatusCodeName(99), "CODE_99");
}

}  // namespace
}  // namespace compressd::loadtest
