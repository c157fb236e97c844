// Soak and fault tests of the real binaries on loopback: `compressd serve --model
// random:tiny` driven by `compressd-loadtest` (see tests/soak/soak_util.h).
//
// SoakTest.* runs only when SOAK_SECONDS is set (CI: 120, scripts/soak.sh: 1800 by
// default); FaultTest.* and SecurityTest.* are bounded (seconds each) and always run when
// both binaries are built. Every test asserts that the server never crashes, that every
// request ends with a final message or a proper status code, and that the server still
// serves afterwards.
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <set>
#include <thread>

#include "gtest/gtest.h"
#include "tests/soak/soak_util.h"

namespace compressd::soak {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

class ProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!Exists(ServerBinary()) || !Exists(LoadtestBinary())) {
      GTEST_SKIP() << "needs " << ServerBinary() << " and " << LoadtestBinary();
    }
    dir_ = TempDir();
  }
  // A few requests that must all complete with a final message: the server still serves.
  void ExpectStillServing(ServerProc& s, const std::string& tag) {
    ASSERT_TRUE(s.child.Running()) << "server died: " << s.child.Output();
    const LoadResult r =
        RunLoadtest(dir_, s.target(), {"--num_requests", "4", "--concurrency", "2",
                                       "--input_len", "fixed:8", "--max_tokens", "4"},
                    seconds(120), tag);
    EXPECT_EQ(r.ok_with_final, 4) << Describe(r) << "\n" << r.log;
  }
  std::string dir_;
};

// Status codes a request may end with under overload: OK (with a final message) or
// RESOURCE_EXHAUSTED (queue full). Anything else is a failure.
void ExpectOnlyOkOrExhausted(const LoadResult& r, int expected_total) {
  EXPECT_EQ(r.total, expected_total) << Describe(r);
  EXPECT_EQ(r.ok_without_final, 0) << Describe(r);
  for (const auto& [status, n] : r.by_status) {
    EXPECT_TRUE(status == "OK" || status == "RESOURCE_EXHAUSTED") << status << " x" << n;
  }
}

using SoakTest = ProcessTest;
using FaultTest = ProcessTest;
using SecurityTest = ProcessTest;

// Open-loop load above capacity for SOAK_SECONDS: no crash, RSS growth < 5% after warm-up,
// every request OK-with-final or RESOURCE_EXHAUSTED, and compressd_requests_total equals
// the number of requests the client saw accepted.
TEST_F(SoakTest, AboveCapacityHoldsMemoryAndCounts) {
  const char* env = std::getenv("SOAK_SECONDS");
  if (env == nullptr) GTEST_SKIP() << "set SOAK_SECONDS (scripts/soak.sh) to run the soak";
  const int secs = std::max(10, std::atoi(env));
  // 1,500 requests/s is ~1.7x what random:tiny on one engine thread serves with this workload
  // on the 2-vCPU machines this project runs on when they are otherwise idle (~900 requests/s
  // measured), so the load stays above capacity; rejected requests are cheap for both sides.
  const double rate = std::getenv("SOAK_RATE") ? std::atof(std::getenv("SOAK_RATE")) : 1500.0;
  const int n = static_cast<int>(rate * secs);
  ServerProc s;
  ASSERT_TRUE(s.Start(dir_, {"--max-queue", "64", "--threads", "1"}));
  ASSERT_TRUE(s.WaitMetrics(seconds(60))) << s.child.Output();

  std::atomic<bool> done{false};
  std::vector<int64_t> rss;      // one sample per second
  std::vector<int64_t> threads;  // the server's thread count at the same instants
  const std::string samples_path = dir_ + "/soak-samples.csv";
  std::thread sampler([&] {
    std::ofstream csv(samples_path);
    csv << "second,rss_kib,threads\n";
    for (int t = 0; !done.load(); ++t) {
      rss.push_back(RssKiB(s.child.pid()));
      threads.push_back(ProcStatusField(s.child.pid(), "Threads"));
      csv << t << "," << rss.back() << "," << threads.back() << "\n" << std::flush;
      std::this_thread::sleep_for(seconds(1));
    }
  });
  const auto t0 = Clock::now();
  const LoadResult r = RunLoadtest(
      dir_, s.target(),
      {"--num_requests", std::to_string(n), "--request_rate", std::to_string(rate),
       // random:tiny has a 256-token context and its byte-fallback vocabulary spends up to
       // ~13 tokens per synthetic word: 12 words + 64 tokens always fit.
       "--input_len", "uniform:4,12", "--output_len", "uniform:8,64", "--timeout", "120",
       "--seed", "7"},
      seconds(secs * 3 + 120), "soak");
  const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
  done = true;
  sampler.join();

  ASSERT_TRUE(s.child.Running()) << "server crashed: " << s.child.Output();
  ASSERT_GE(rss.size(), 5u);
  // Warm-up: the first 20% of the samples (allocator pools, gRPC threads, KV pool touch).
  const size_t warm = rss.size() / 5;
  const int64_t after_warmup = *std::max_element(rss.begin(), rss.begin() + warm + 1);
  const int64_t peak_late = *std::max_element(rss.begin() + warm, rss.end());
  const double growth = static_cast<double>(peak_late - after_warmup) / after_warmup;
  // How far behind the server fell in refusing requests, per 10 s window after the warm-up:
  // seconds of refusal latency mean requests queued above the engine's bounded queue. Before
  // --max-concurrent-streams they queued inside the server's gRPC and raised its RSS
  // high-water mark when the machine was busy; with the bound (default max-running +
  // max-queue + 64 per connection) they wait in the client instead.
  const auto [refusal_p99, refusal_at] = WorstRefusalP99(r, static_cast<double>(warm), 10.0);
  const bool idle = s.IdleWithin(seconds(30));
  const double server_total = MetricSum(s.Metrics(), "compressd_requests_total");
  const int accepted = Count(r, "OK");
  // One line with every figure, printed before the checks so that a failing run reports them.
  std::printf(
      "SOAK secs=%d wall=%.0f sent=%d rate=%.1f/s ok=%d exhausted=%d served=%.2f req/s "
      "%.1f tok/s rss_kib start=%lld warm=%lld peak_late=%lld end=%lld growth=%.2f%% "
      "threads warm=%lld peak=%lld worst_refusal_p99=%.3fs at t=%.0fs requests_total=%.0f "
      "client: %s samples=%s\n",
      secs, wall, n, rate, accepted, Count(r, "RESOURCE_EXHAUSTED"), r.request_throughput,
      r.output_token_throughput, static_cast<long long>(rss.front()),
      static_cast<long long>(after_warmup), static_cast<long long>(peak_late),
      static_cast<long long>(rss.back()), growth * 100,
      static_cast<long long>(*std::max_element(threads.begin(), threads.begin() + warm + 1)),
      static_cast<long long>(*std::max_element(threads.begin(), threads.end())), refusal_p99,
      refusal_at, server_total, Describe(r).c_str(), samples_path.c_str());
  std::fflush(stdout);

  ExpectOnlyOkOrExhausted(r, n);
  // Above capacity: the queue overflowed at some point (raise SOAK_RATE if not).
  EXPECT_GT(Count(r, "RESOURCE_EXHAUSTED"), 0) << "SOAK_RATE " << rate << " is not above capacity";
  EXPECT_LT(growth, 0.05) << "RSS " << after_warmup << " KiB after warm-up, " << peak_late
                          << " KiB peak later; per-second samples in " << samples_path
                          << "; worst p99 refusal latency after warm-up " << refusal_p99
                          << " s at t=" << refusal_at
                          << " s (over ~0.1 s: the server was starved of CPU by other "
                             "processes; run the soak alone, as scripts/test.sh does)";
  ASSERT_TRUE(idle) << s.Metrics();
  EXPECT_EQ(static_cast<int>(server_total), accepted) << Describe(r);
  ExpectStillServing(s, "after-soak");
}

// 1,000 requests at once into a queue of 64: the overflow gets RESOURCE_EXHAUSTED, the rest
// complete, and the server counts exactly the accepted ones.
TEST_F(FaultTest, BurstIntoSmallQueue) {
  ServerProc s;
  ASSERT_TRUE(s.Start(dir_, {"--max-queue", "64", "--max-running", "16", "--threads", "1"}));
  ASSERT_TRUE(s.WaitMetrics(seconds(60))) << s.child.Output();
  const LoadResult r = RunLoadtest(
      dir_, s.target(),
      {"--num_requests", "1000", "--request_rate", "0", "--input_len", "fixed:4",
       "--max_tokens", "8", "--timeout", "120"},
      seconds(300), "burst");
  ASSERT_TRUE(s.child.Running()) << s.child.Output();
  ExpectOnlyOkOrExhausted(r, 1000);
  EXPECT_GT(Count(r, "RESOURCE_EXHAUSTED"), 0) << Describe(r);
  EXPECT_GE(Count(r, "OK"), 64) << Describe(r);
  ASSERT_TRUE(s.IdleWithin(seconds(30)));
  EXPECT_EQ(static_cast<int>(MetricSum(s.Metrics(), "compressd_requests_total")),
            Count(r, "OK"));
  std::printf("BURST %s\n", Describe(r).c_str());
  ExpectStillServing(s, "after-burst");
}

// Clients that go away mid-stream (the loadtest cancels in-flight calls at its duration
// limit): the engine frees them and goes idle.
TEST_F(FaultTest, ClientsDisconnectMidStream) {
  ServerProc s;
  ASSERT_TRUE(s.Start(dir_, {"--threads", "1"}));
  ASSERT_TRUE(s.WaitMetrics(seconds(60))) << s.child.Output();
  const LoadResult r = RunLoadtest(
      dir_, s.target(),
      // 360k tokens cannot finish within the 1 s limit on any machine this runs on, so
      // in-flight streams are always cut (the test must not depend on machine speed).
      {"--num_requests", "3000", "--concurrency", "32", "--input_len", "fixed:8",
       "--max_tokens", "120", "--duration_limit", "1"},
      seconds(120), "disconnect");
  ASSERT_TRUE(s.child.Running()) << s.child.Output();
  EXPECT_GT(Count(r, "CANCELLED"), 0) << Describe(r);
  EXPECT_EQ(r.ok_without_final, 0);
  EXPECT_TRUE(s.IdleWithin(seconds(30))) << s.Metrics();
  std::printf("DISCONNECT %s\n", Describe(r).c_str());
  ExpectStillServing(s, "after-disconnect");
}

// 1 ms deadlines: every request is OK or DEADLINE_EXCEEDED, nothing leaks in the engine.
TEST_F(FaultTest, OneMillisecondDeadlines) {
  ServerProc s;
  ASSERT_TRUE(s.Start(dir_, {"--threads", "1"}));
  ASSERT_TRUE(s.WaitMetrics(seconds(60))) << s.child.Output();
  const LoadResult r = RunLoadtest(
      dir_, s.target(),
      {"--num_requests", "300", "--concurrency", "16", "--input_len", "fixed:16",
       "--max_tokens", "32", "--timeout", "0.001"},
      seconds(120), "deadline");
  ASSERT_TRUE(s.child.Running()) << s.child.Output();
  EXPECT_EQ(r.total, 300) << Describe(r);
  for (const auto& [status, n] : r.by_status) {
    EXPECT_TRUE(status == "OK" || status == "DEADLINE_EXCEEDED") << status << " x" << n;
  }
  EXPECT_EQ(r.ok_without_final, 0);
  EXPECT_TRUE(s.IdleWithin(seconds(30))) << s.Metrics();
  std::printf("DEADLINE %s\n", Describe(r).c_str());
  ExpectStillServing(s, "after-deadline");
}

// 500 streams open at once (most of them waiting in the queue with nothing to read): all
// complete.
TEST_F(FaultTest, FiveHundredOpenStreams) {
  ServerProc s;
  ASSERT_TRUE(s.Start(dir_, {"--max-queue", "600", "--threads", "1"}));
  ASSERT_TRUE(s.WaitMetrics(seconds(60))) << s.child.Output();
  const LoadResult r = RunLoadtest(
      dir_, s.target(),
      {"--num_requests", "500", "--concurrency", "500", "--input_len", "fixed:4",
       "--max_tokens", "4", "--timeout", "240"},
      seconds(300), "streams500");
  ASSERT_TRUE(s.child.Running()) << s.child.Output();
  EXPECT_EQ(r.ok_with_final, 500) << Describe(r);
  std::printf("STREAMS500 %s rss_kib=%lld\n", Describe(r).c_str(),
              static_cast<long long>(RssKiB(s.child.pid())));
  ExpectStillServing(s, "after-streams500");
}

// KV exhaustion: a KV pool far smaller than running x context and prompts near the 256-token
// context. Requests wait, get preempted or are refused, but each ends cleanly.
TEST_F(FaultTest, KvCacheExhaustion) {
  ServerProc s;
  ASSERT_TRUE(s.Start(dir_, {"--kv-cache-memory", "96KiB", "--kv-block-size", "16",
                             "--threads", "1"}));
  ASSERT_TRUE(s.WaitMetrics(seconds(60))) << s.child.Output();
  const LoadResult r = RunLoadtest(
      dir_, s.target(),
      {"--num_requests", "48", "--concurrency", "16", "--input_len", "uniform:20,28",
       "--max_tokens", "40", "--timeout", "120"},
      seconds(300), "kv");
  ASSERT_TRUE(s.child.Running()) << s.child.Output();
  EXPECT_EQ(r.total, 48) << Describe(r);
  EXPECT_EQ(r.ok_without_final, 0);
  for (const auto& [status, n] : r.by_status) {
    EXPECT_TRUE(status == "OK" || status == "RESOURCE_EXHAUSTED" ||
                status == "INVALID_ARGUMENT")
        << status << " x" << n;
  }
  EXPECT_GT(Count(r, "OK"), 0) << Describe(r);
  EXPECT_TRUE(s.IdleWithin(seconds(30))) << s.Metrics();
  const double preemptions = MetricSum(s.Metrics(), "compressd_preemptions_total");
  // The pool (384 tokens) cannot hold the running set: the engine had to preempt or refuse.
  EXPECT_GT(preemptions + Count(r, "RESOURCE_EXHAUSTED"), 0) << Describe(r);
  std::printf("KV %s preemptions=%.0f\n", Describe(r).c_str(), preemptions);
  ExpectStillServing(s, "after-kv");
}

// KV exhaustion with 4k-token prompts (the case): random:tiny-8k (8k context) with a
// pool of ~12k tokens, so at most two or three of these sequences fit at once while six are
// offered. Long prompts are prefilled in chunks, preempted and recomputed; each request ends
// cleanly and the server stays healthy.
TEST_F(FaultTest, KvCacheExhaustionWith4kTokenPrompts) {
  ServerProc s;
  ASSERT_TRUE(s.Start(dir_, {"--model", "random:tiny-8k", "--kv-cache-memory", "3MiB",
                             "--kv-block-size", "16", "--threads", "1"}));
  ASSERT_TRUE(s.WaitMetrics(seconds(60))) << s.child.Output();
  // ~7.5 tokens per synthetic word with this vocabulary: 530-560 words are ~4k tokens.
  const LoadResult r = RunLoadtest(
      dir_, s.target(),
      {"--num_requests", "12", "--concurrency", "6", "--input_len", "uniform:530,560",
       "--max_tokens", "32", "--timeout", "300"},
      seconds(600), "kv4k");
  ASSERT_TRUE(s.child.Running()) << s.child.Output();
  EXPECT_EQ(r.total, 12) << Describe(r);
  EXPECT_EQ(r.ok_without_final, 0);
  for (const auto& [status, n] : r.by_status) {
    EXPECT_TRUE(status == "OK" || status == "RESOURCE_EXHAUSTED") << status << " x" << n;
  }
  EXPECT_GT(Count(r, "OK"), 0) << Describe(r);
  EXPECT_TRUE(s.IdleWithin(seconds(30))) << s.Metrics();
  const std::string m = s.Metrics();
  const double preemptions = MetricSum(m, "compressd_preemptions_total");
  const double prompt_tokens = MetricSum(m, "compressd_prompt_tokens_total");
  // The prompts really were ~4k tokens each (counted by the server, not the client).
  EXPECT_GT(prompt_tokens, 3500.0 * Count(r, "OK")) << m;
  EXPECT_GT(preemptions + Count(r, "RESOURCE_EXHAUSTED"), 0) << Describe(r);
  std::printf("KV4K %s preemptions=%.0f prompt_tokens=%.0f\n", Describe(r).c_str(), preemptions,
              prompt_tokens);
  ExpectStillServing(s, "after-kv4k");
}

// A model path that does not exist: exit non-zero quickly, naming the path.
TEST_F(FaultTest, MalformedModelPathExitsNonZero) {
  for (const std::string& model :
       {std::string("/nonexistent/compressd-model"), std::string("random:no-such-shape"),
        dir_ /* a directory without config.json */}) {
    ServerProc s;
    ASSERT_TRUE(s.Start(dir_, {"--model", model}));
    const auto code = s.child.Wait(seconds(60));
    ASSERT_TRUE(code.has_value()) << model << ": still running";
    EXPECT_NE(*code, 0) << model;
    EXPECT_LT(*code, 128) << model << ": died of a signal";
    const std::string out = s.child.Output();
    EXPECT_NE(out.find(model.substr(model.find_last_of("/:") + 1)), std::string::npos)
        << "message does not name " << model << ": " << out;
  }
}

// SIGTERM with 50 streams in flight: every stream finishes (OK with a final message) or
// gets UNAVAILABLE, and the server exits 0 within --drain-timeout (+ margin).
TEST_F(FaultTest, SigtermDrainsFiftyStreams) {
  ServerProc s;
  ASSERT_TRUE(s.Start(dir_, {"--drain-timeout", "300ms", "--threads", "1"}));
  ASSERT_TRUE(s.WaitMetrics(seconds(60))) << s.child.Output();
  std::vector<std::string> flags = {"--num_requests", "50", "--concurrency", "50",
                                    "--input_len", "fixed:8", "--max_tokens", "180",
                                    "--timeout", "60"};
  LoadResult r;
  std::thread client([&] { r = RunLoadtest(dir_, s.target(), flags, seconds(120), "sigterm"); });
  // Wait until the streams are in the engine.
  const auto end = Clock::now() + seconds(30);
  while (Clock::now() < end) {
    const std::string m = s.Metrics();
    if (MetricSum(m, "compressd_requests_running") + MetricSum(m, "compressd_requests_waiting") >=
        40) {
      break;
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
  const auto t0 = Clock::now();
  s.child.Signal(SIGTERM);
  const auto code = s.child.Wait(seconds(10));
  const double took = std::chrono::duration<double>(Clock::now() - t0).count();
  client.join();
  ASSERT_TRUE(code.has_value()) << "server did not exit within drain-timeout + 10 s";
  EXPECT_EQ(*code, 0) << s.child.Output();
  EXPECT_EQ(r.total, 50) << Describe(r);
  EXPECT_EQ(r.ok_without_final, 0);
  for (const auto& [status, n] : r.by_status) {
    EXPECT_TRUE(status == "OK" || status == "UNAVAILABLE") << status << " x" << n;
  }
  std::printf("SIGTERM exit=%d after %.2fs %s\n", *code, took, Describe(r).c_str());
}

// SIGKILL, then a restart on the same port reports SERVING (the loadtest waits for
// grpc.health.v1 SERVING before sending) and serves.
TEST_F(FaultTest, SigkillAndRestart) {
  ServerProc s;
  ASSERT_TRUE(s.Start(dir_, {"--threads", "1"}));
  ASSERT_TRUE(s.WaitMetrics(seconds(60))) << s.child.Output();
  ExpectStillServing(s, "before-kill");
  const int port = s.port;
  s.child.Signal(SIGKILL);
  ASSERT_TRUE(s.child.Wait(seconds(10)).has_value());
  ServerProc again;
  ASSERT_TRUE(again.Start(dir_, {"--threads", "1"}, port));
  ASSERT_TRUE(again.WaitMetrics(seconds(60))) << again.child.Output();
  ExpectStillServing(again, "after-restart");
}

// The metrics endpoint binds 127.0.0.1 unless told otherwise (/proc/net/tcp: the listening
// socket on the metrics port has local address 0100007F).
TEST_F(SecurityTest, MetricsBindsLoopbackByDefault) {
  const int port = FreePort();
  const int metrics_port = FreePort();
  Child c;
  ASSERT_TRUE(c.Start({ServerBinary(), "serve", "--model", "random:tiny", "--host", "127.0.0.1",
                       "--port", std::to_string(port), "--metrics-port",
                       std::to_string(metrics_port)},
                      dir_ + "/metrics-bind.log"));
  char hex_port[8];
  std::snprintf(hex_port, sizeof(hex_port), "%04X", metrics_port);
  std::set<std::string> listen_addrs;
  const auto end = Clock::now() + seconds(60);
  while (Clock::now() < end && listen_addrs.empty() && c.Running()) {
    for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
      std::istringstream in(ReadFile(table));
      std::string line;
      while (std::getline(in, line)) {
        std::istringstream f(line);
        std::string sl, local, remote, state;
        f >> sl >> local >> remote >> state;
        if (state == "0A" && local.size() > 5 && local.substr(local.size() - 4) == hex_port) {
          listen_addrs.insert(local.substr(0, local.size() - 5));
        }
      }
    }
    std::this_thread::sleep_for(milliseconds(50));
  }
  ASSERT_FALSE(listen_addrs.empty()) << c.Output();
  for (const std::string& a : listen_addrs) {
    EXPECT_EQ(a, "0100007F") << "metrics listens on " << a << " (not 127.0.0.1)";
  }
}

// A 10 MB prompt is refused with INVALID_ARGUMENT by its byte count (before it is tokenized),
// never a crash, and the server keeps serving.
TEST_F(SecurityTest, TenMegabytePromptIsRefused) {
  ServerProc s;
  ASSERT_TRUE(s.Start(dir_, {"--threads", "1"}));
  ASSERT_TRUE(s.WaitMetrics(seconds(60))) << s.child.Output();
  const std::string dataset = dir_ + "/big.jsonl";
  {
    std::ofstream out(dataset);
    std::string prompt;
    prompt.reserve(10 << 20);
    while (prompt.size() < (10u << 20)) prompt += "once upon a time ";
    out << "{\"prompt\": \"" << prompt << "\", \"max_tokens\": 4}\n";
  }
  const LoadResult r = RunLoadtest(
      dir_, s.target(),
      {"--dataset", dataset, "--num_requests", "2", "--concurrency", "1", "--timeout", "120"},
      seconds(300), "bigprompt");
  ASSERT_TRUE(s.child.Running()) << s.child.Output();
  EXPECT_EQ(r.total, 2) << Describe(r) << r.log;
  EXPECT_EQ(Count(r, "INVALID_ARGUMENT"), 2) << Describe(r);
  for (const auto& run : r.report.value("runs", nlohmann::json::array())) {
    for (const auto& q : run.value("requests", nlohmann::json::array())) {
      EXPECT_NE(q.value("error", std::string()).find("bytes; at most"), std::string::npos)
          << q.dump();
    }
  }
  std::printf("BIGPROMPT %s\n", Describe(r).c_str());
  ExpectStillServing(s, "after-bigprompt");
}

}  // namespace
}  // namespace compressd::soak
