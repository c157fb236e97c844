// The KV pressure ladder's Prometheus counters (server/metrics.cc): demotions labelled by the
// codec step and the reason (pressure, or a request's kv_cache), their engine time, and
// preemptions as the ladder's last step.
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/metrics.h"

namespace compressd::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(MetricsKvLadder, DemotionsAreCountedByCodecStep) {
  EngineStats stats;
  stats.preemptions_total = 2;
  stats.kv_demotions_total = 7;
  stats.kv_demotions_requested_total = 3;  // of the 7, for requests that asked for int2
  stats.kv_demotion_from = "int4";
  stats.kv_demotion_to = "int2";
  stats.kv_demotion_seconds_total = 0.5;
  auto m = Metrics::Create(
      MetricsOptions{"127.0.0.1", 0}, [stats] { return stats; }, ModelGauges{});
  ASSERT_TRUE(m.ok()) << m.status();
  const std::string text = (*m)->Serialize();
  EXPECT_THAT(text, HasSubstr("# TYPE compressd_kv_blocks_demoted_total counter"));
  EXPECT_THAT(text, HasSubstr("compressd_kv_blocks_demoted_total{from=\"int4\",to=\"int2\","
                              "reason=\"pressure\"} 4"));
  EXPECT_THAT(text, HasSubstr("compressd_kv_blocks_demoted_total{from=\"int4\",to=\"int2\","
                              "reason=\"request\"} 3"));
  EXPECT_THAT(text, HasSubstr("# HELP compressd_kv_blocks_demoted_total KV block pairs"));
  EXPECT_THAT(text, HasSubstr("compressd_kv_demotion_seconds_total 0.5"));
  EXPECT_THAT(text, HasSubstr("compressd_preemptions_total 2"));
}

TEST(MetricsKvLadder, NoDemotionSeriesWhenTheCodecCannotDemote) {
  EngineStats stats;  // kv_demotion_from empty: fp16, int2, ladder off
  auto m = Metrics::Create(
      MetricsOptions{"127.0.0.1", 0}, [stats] { return stats; }, ModelGauges{});
  ASSERT_TRUE(m.ok()) << m.status();
  const std::string text = (*m)->Serialize();
  EXPECT_THAT(text, Not(HasSubstr("compressd_kv_blocks_demoted_total")));
  EXPECT_THAT(text, HasSubstr("compressd_kv_demotion_seconds_total 0"));
}

}  // namespace
}  // namespace compressd::server
