// Tests of `compressd serve` option parsing and of the metrics registry (no engine).
#include "server/options.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "engine/kv/kv_codec.h"
#include "server/metrics.h"

namespace compressd::server {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<ParsedServeArgs> Parse(std::vector<const char*> args) {
  args.insert(args.begin(), "serve");
  return ParseServeArgs(static_cast<int>(args.size()), args.data());
}

TEST(ServeOptions, Defaults) {
  const ServerOptions o;
  EXPECT_EQ(o.host, "0.0.0.0");
  EXPECT_EQ(o.port, 50051);
  EXPECT_EQ(o.metrics_host, "127.0.0.1");
  EXPECT_EQ(o.metrics_port, 9090);
  EXPECT_EQ(o.drain_timeout, absl::Seconds(30));
  EXPECT_FALSE(o.tls.enabled());
  EXPECT_EQ(o.max_concurrent_streams, 0);
  // Automatic: what the engine can hold (64 running + 256 waiting) plus 64 of headroom.
  EXPECT_EQ(EffectiveMaxConcurrentStreams(o), 64 + 256 + 64);
  auto p = Parse({});
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(p->help);
  EXPECT_EQ(p->options.port, 50051);
}

TEST(ServeOptions, ParsesEveryForm) {
  auto p = Parse({"--model", "random:tiny", "--port=0", "--metrics-port", "0", "--host=127.0.0.1",
                  "--drain-timeout=1.5m", "--max-message-size=8MiB", "--max-queue", "7",
                  "--no-prefix-caching", "--kv-cache-memory=1Gi", "--threads=2",
                  "--context-length", "128", "--tls-cert=c.pem", "--tls-key", "k.pem",
                  "--tls-client-ca=ca.pem", "--log-level=warn", "--seed-weights=9",
                  "--max-concurrent-streams", "500"});
  ASSERT_TRUE(p.ok()) << p.status();
  const ServerOptions& o = p->options;
  EXPECT_EQ(o.engine.model, "random:tiny");
  EXPECT_EQ(o.port, 0);
  EXPECT_EQ(o.metrics_port, 0);
  EXPECT_EQ(o.host, "127.0.0.1");
  EXPECT_EQ(o.drain_timeout, absl::Seconds(90));
  EXPECT_EQ(o.max_message_bytes, 8 << 20);
  EXPECT_EQ(o.engine.max_queue, 7);
  EXPECT_FALSE(o.engine.prefix_caching);
  EXPECT_EQ(o.engine.kv_cache_memory, int64_t{1} << 30);
  EXPECT_EQ(o.engine.threads, 2);
  EXPECT_EQ(o.engine.context_length, 128);
  EXPECT_TRUE(o.tls.enabled());
  EXPECT_TRUE(o.tls.mutual());
  EXPECT_EQ(o.log_level, "warn");
  EXPECT_EQ(o.engine.random_seed, 9u);
  EXPECT_EQ(o.max_concurrent_streams, 500);
  EXPECT_EQ(EffectiveMaxConcurrentStreams(o), 500);
  EXPECT_TRUE(ValidateServerOptions(o).ok());
  // 0 (the default) derives the bound from the engine's limits.
  auto a = Parse({"--max-queue=64", "--max-running", "16", "--max-concurrent-streams=0"});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(EffectiveMaxConcurrentStreams(a->options), 16 + 64 + 64);

  auto b = Parse({"--prefix-caching=false", "--prefix-caching"});
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(b->options.engine.prefix_caching);
  EXPECT_TRUE(Parse({"--help"})->help);
  EXPECT_TRUE(Parse({"-h"})->help);
}

TEST(ServeOptions, ErrorsNameTheOption) {
  struct Case {
    std::vector<const char*> args;
    const char* fragment;
  } cases[] = {
      {{"--bogus=1"}, "unknown option --bogus"},
      {{"--no-port"}, "unknown option --no-port"},
      {{"--port"}, "--port needs a value"},
      {{"--port=abc"}, "--port: 'abc' is not an integer"},
      {{"--port=70000"}, "--port: 70000 is outside the allowed range [0, 65535]"},
      {{"--metrics-port=-1"}, "--metrics-port"},
      {{"--drain-timeout=soon"}, "--drain-timeout"},
      {{"--drain-timeout=-3s"}, "--drain-timeout"},
      {{"--max-message-size=12"}, "--max-message-size"},
      {{"--prefix-caching=maybe"}, "--prefix-caching"},
      {{"--log-level=loud"}, "--log-level"},
      {{"--max-running=0"}, "--max-running"},
      {{"--max-concurrent-streams=-1"},
       "--max-concurrent-streams: -1 is outside the allowed range [0, 2147483647]"},
      {{"--max-concurrent-streams=many"}, "--max-concurrent-streams: 'many' is not an integer"},
      {{"--max-concurrent-streams=1e3"}, "--max-concurrent-streams: '1e3' is not an integer"},
      {{"--max-concurrent-streams=4294967296"}, "--max-concurrent-streams"},
      {{"--max-concurrent-streams"}, "--max-concurrent-streams needs a value"},
      {{"--weight-memory-budget=lots"}, "--weight-memory-budget"},
      {{"positional"}, "unexpected argument 'positional'"},
  };
  for (const Case& c : cases) {
    auto p = Parse(c.args);
    ASSERT_FALSE(p.ok()) << c.args[0];
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(p.status().message()), HasSubstr(c.fragment));
  }
}

TEST(ServeOptions, WeightMemoryBudget) {
  auto p = Parse({"--weight-memory-budget", "600MiB"});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->options.engine.weight_memory_budget, int64_t{600} << 20);
  auto off = Parse({"--weight-memory-budget=0"});
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_EQ(off->options.engine.weight_memory_budget, 0);
  EXPECT_THAT(ServeUsage(), HasSubstr("--weight-memory-budget"));
}

TEST(ServeOptions, CrossFieldValidation) {
  ServerOptions o;
  EXPECT_THAT(std::string(ValidateServerOptions(o).message()), HasSubstr("--model"));
  o.engine.model = "random:tiny";
  EXPECT_TRUE(ValidateServerOptions(o).ok());
  o.tls.cert_file = "c.pem";
  EXPECT_THAT(std::string(ValidateServerOptions(o).message()), HasSubstr("--tls-key"));
  o.tls.cert_file.clear();
  o.tls.client_ca_file = "ca.pem";
  EXPECT_THAT(std::string(ValidateServerOptions(o).message()), HasSubstr("--tls-client-ca"));
}

TEST(ServeOptions, UsageListsEveryOptionWithDefault) {
  const std::string u = ServeUsage();
  for (const char* name :
       {"--host=ADDR", "--port=N", "--metrics-host", "--metrics-port", "--drain-timeout",
        "--max-message-size", "--tls-cert", "--tls-key", "--tls-client-ca", "--log-level",
        "--model", "--weights", "--kv-cache", "--calibration-file", "--device", "--threads",
        "--kv-cache-memory", "--kv-block-size", "--max-batch-tokens", "--max-running",
        "--max-queue", "--max-concurrent-streams=N", "--prefix-caching", "--context-length", "--seed-weights", "--help"}) {
    EXPECT_THAT(u, HasSubstr(name));
  }
  EXPECT_THAT(u, HasSubstr("(default: 50051)"));
  EXPECT_THAT(u, HasSubstr("(default: 30s)"));
  EXPECT_THAT(u, HasSubstr("(default: 9090)"));
  EXPECT_THAT(u, HasSubstr("(default: 0, i.e. 384)"));
}

// The --kv-cache line of --help names every registered KV codec family (a codec added to the
// registry without a word in --help fails here).
TEST(ServeOptions, UsageNamesEveryKvCodec) {
  const std::string u = ServeUsage();
  const size_t at = u.find("--kv-cache=CODEC");
  ASSERT_NE(at, std::string::npos);
  const std::string line = u.substr(at, u.find('\n', at) - at);
  const std::vector<std::string> names = KvCodecNames();
  ASSERT_GE(names.size(), 10u);
  for (const std::string& name : names) EXPECT_THAT(line, HasSubstr(name)) << name;
}

TEST(ServeOptions, SizesAndDurations) {
  // Sizes: engine/core/byte_size.h (tests/engine/core/byte_size_test.cc); a serve flag
  // takes that syntax and names itself on errors.
  auto ok = Parse({"--kv-cache-memory", "96KiB"});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->options.engine.kv_cache_memory, 96 * 1024);
  auto bad = Parse({"--kv-cache-memory", "1PB"});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("kv-cache-memory"));
  EXPECT_EQ(*ParseDurationFlag("45"), absl::Seconds(45));
  EXPECT_EQ(*ParseDurationFlag("500ms"), absl::Milliseconds(500));
  EXPECT_FALSE(ParseDurationFlag("inf").ok());
}

TEST(Metrics, RegistryHasEveryContractName) {
  EngineStats stats;
  stats.running = 3;
  stats.waiting = 2;
  stats.kv_usage_ratio = 0.25;
  stats.prompt_tokens_total = 40;
  stats.generation_tokens_total = 17;
  stats.preemptions_total = 1;
  stats.prefix_cache_hits_total = 8;
  auto m = Metrics::Create(MetricsOptions{"127.0.0.1", 0}, [stats] { return stats; },
                           ModelGauges{36.0, 4.5});
  ASSERT_TRUE(m.ok()) << m.status();
  Usage u;
  u.completion_tokens = 4;
  u.time_to_first_token_s = 0.01;
  u.e2e_latency_s = 0.2;
  (*m)->ObserveFinished(FinishReason::kStop, u);
  (*m)->ObserveFinished(FinishReason::kLength, u);
  (*m)->ObserveFinished(FinishReason::kLength, u);
  (*m)->ObserveInterTokenLatency(0.003);
  const std::string text = (*m)->Serialize();
  for (const char* name :
       {"compressd_time_to_first_token_seconds_bucket", "compressd_inter_token_latency_seconds_count 1",
        "compressd_e2e_request_latency_seconds_count 3", "compressd_request_queue_time_seconds_sum",
        "compressd_requests_running 3", "compressd_requests_waiting 2",
        "compressd_kv_cache_usage_ratio 0.25", "compressd_kv_cache_bytes_per_token 36",
        "compressd_weight_bits_per_param 4.5", "compressd_preemptions_total 1",
        "compressd_prompt_tokens_total 40", "compressd_generation_tokens_total 17",
        "compressd_prefix_cache_hits_total 8", "compressd_requests_total{finish_reason=\"length\"} 2",
        "compressd_requests_total{finish_reason=\"stop\"} 1",
        "compressd_requests_total{finish_reason=\"cancelled\"} 0"}) {
    EXPECT_THAT(text, HasSubstr(name));
  }
  EXPECT_EQ((*m)->port(), 0);
}

}  // namespace
}  // namespace compressd::server

namespace compressd::server {
namespace {

TEST(ServeOptions, KvPressureLadder) {
  auto p = Parse({"--model", "random:tiny"});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->options.engine.kv_pressure_ladder);
  EXPECT_EQ(p->options.engine.kv_pressure_min_bits, 2);
  p = Parse({"--model", "random:tiny", "--no-kv-pressure-ladder",
                             "--kv-pressure-min-bits=4"});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_FALSE(p->options.engine.kv_pressure_ladder);
  EXPECT_EQ(p->options.engine.kv_pressure_min_bits, 4);
  for (const char* bad : {"3", "0", "16", "two"}) {
    auto q = Parse({"--model", "random:tiny", "--kv-pressure-min-bits", bad});
    ASSERT_FALSE(q.ok()) << bad;
    EXPECT_NE(std::string(q.status().message()).find("kv-pressure-min-bits"), std::string::npos)
        << q.status();
  }
  EXPECT_NE(ServeUsage().find("--kv-pressure-ladder"), std::string::npos);
}

}  // namespace
}  // namespace compressd::server
