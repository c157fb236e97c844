// End to end: a real `compressd serve --model random:tiny` and the load generator against it,
// both in-process (the runner library) and as the compressd-loadtest binary. Skips when the
// server binary or its `serve` subcommand is not there yet.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "loadtest/health.h"
#include "loadtest/report_json.h"
#include "loadtest/runner.h"
#include "loadtest/workload.h"
#include "tests/util/test_env.h"

extern char** environ;

namespace compressd::loadtest {
namespace {

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Tail(const std::string& s, size_t n = 2000) {
  return s.size() <= n ? s : s.substr(s.size() - n);
}

class LoadtestE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = ::compressd::testing::BinaryDir() + "/server/compressd";
    loadtest_ = ::compressd::testing::BinaryDir() + "/loadtest/compressd-loadtest";
    if (::access(server_.c_str(), X_OK) != 0) {
      GTEST_SKIP() << server_ << " is not built yet; `compressd serve` is needed for this test";
    }
    port_ = FreePort();
    const int metrics_port = FreePort();
    log_ = absl::StrCat(::testing::TempDir(), "/compressd_serve_", getpid(), ".log");
    std::vector<std::string> args = {server_,           "serve",
                                     "--model",         "random:tiny",
                                     "--port",          absl::StrCat(port_),
                                     "--metrics-port",  absl::StrCat(metrics_port),
                                     "--drain-timeout", "5s"};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    const int rc = posix_spawn(&pid_, server_.c_str(), &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ASSERT_EQ(rc, 0) << "cannot start " << server_;

    auto channel = Connect(absl::StrCat("localhost:", port_), 1.0);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        GTEST_SKIP() << "`compressd serve --model random:tiny` exited before serving (status "
                     << status << "); it is probably not implemented yet. Log tail:\n"
                     << Tail(Slurp(log_));
      }
      channel = Connect(absl::StrCat("localhost:", port_), 1.0);
      if (channel.ok() && CheckHealth(*channel, "", 2.0).ok()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    ASSERT_TRUE(channel.ok() && CheckHealth(*channel, "", 2.0).ok())
        << "server did not report SERVING within 120 s. Log tail:\n"
        << Tail(Slurp(log_));
    channel_ = *channel;
  }

  void TearDown() override {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int status = 0;
      for (int i = 0; i < 100 && ::waitpid(pid_, &status, WNOHANG) == 0; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      if (::waitpid(pid_, &status, WNOHANG) == 0) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
      }
    }
  }

  std::string Target() const { return absl::StrCat("localhost:", port_); }

  std::string server_, loadtest_, log_;
  pid_t pid_ = -1;
  int port_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(LoadtestE2eTest, ClosedLoopMeasuresEveryToken) {
  auto items =
      SyntheticWorkload(8, *ParseLengthDist("uniform:4,16"), *ParseLengthDist("fixed:6"), 1);
  RunSpec spec;
  spec.concurrency = 4;
  spec.request_timeout_s = 60;
  RunResult r = RunLoad(channel_, items, spec);
  ASSERT_EQ(r.records.size(), 8u);
  for (const RequestRecord& rec : r.records) {
    ASSERT_TRUE(rec.ok()) << StatusCodeName(rec.status_code) << ": " << rec.error;
    EXPECT_EQ(rec.output_tokens, 6) << "ignore_eos is set, so max_tokens tokens are expected";
    EXPECT_GT(rec.ttft_s, 0);
    EXPECT_GE(rec.e2e_s, rec.ttft_s);
    EXPECT_EQ(rec.itl_s.size(), 5u);
    EXPECT_GT(rec.prompt_tokens, 0);
  }
  EXPECT_GT(r.duration_s, 0);
}

// --kv_cache reaches the server as GenerateRequest.kv_cache: random:tiny serves fp16 KV,
// which has no smaller codec for requests, so "int2" is refused with the field's name.
TEST_F(LoadtestE2eTest, SendsThePerRequestKvCodec) {
  auto items = SyntheticWorkload(3, *ParseLengthDist("fixed:4"), *ParseLengthDist("fixed:2"), 1);
  RunSpec spec;
  spec.concurrency = 3;
  spec.request_timeout_s = 60;
  spec.kv_cache = "int2";
  RunResult r = RunLoad(channel_, items, spec);
  ASSERT_EQ(r.records.size(), 3u);
  for (const RequestRecord& rec : r.records) {
    EXPECT_EQ(StatusCodeName(rec.status_code), "INVALID_ARGUMENT") << rec.error;
    EXPECT_NE(rec.error.find("kv_cache"), std::string::npos) << rec.error;
  }
}

TEST_F(LoadtestE2eTest, OpenLoopWithDurationLimitCancelsTheRest) {
  auto items = SyntheticWorkload(50, *ParseLengthDist("fixed:8"), *ParseLengthDist("fixed:4"), 2);
  RunSpec spec;
  spec.arrivals = std::vector<double>(50);
  for (int i = 0; i < 50; ++i) spec.arrivals[i] = 0.1 * i;  // 5 s of arrivals
  spec.duration_limit_s = 1.0;
  RunResult r = RunLoad(channel_, items, spec);
  EXPECT_GT(r.not_sent, 30);
  EXPECT_EQ(r.records.size() + r.not_sent, 50u);
}

TEST_F(LoadtestE2eTest, BinaryWritesReportsAndCompares) {
  const std::string dir = ::testing::TempDir();
  const std::string a = absl::StrCat(dir, "/lt_a_", getpid(), ".json");
  const std::string b = absl::StrCat(dir, "/lt_b_", getpid(), ".json");
  const std::string html = absl::StrCat(dir, "/lt_b_", getpid(), ".html");
  const std::string common = absl::StrCat(loadtest_, " --target ", Target(),
                                          " --num-requests 6 --input-len 12 --max-tokens 4 "
                                          "--slo ttft:5000,tpot:1000 --warmup 2");
  ASSERT_EQ(std::system(absl::StrCat(common, " --request-rate 20 --output ", a).c_str()), 0);
  ASSERT_EQ(
      std::system(
          absl::StrCat(common, " --sweep rates=10,40 --output ", b, " --html ", html).c_str()),
      0);
  auto ra = ReadReportJson(a);
  auto rb = ReadReportJson(b);
  ASSERT_TRUE(ra.ok()) << ra.status();
  ASSERT_TRUE(rb.ok()) << rb.status();
  ASSERT_EQ(ra->runs.size(), 1u);
  ASSERT_EQ(rb->runs.size(), 2u);
  EXPECT_EQ(ra->runs[0].summary.completed, 6);
  EXPECT_EQ(ra->runs[0].summary.output_tokens, 24);
  EXPECT_GT(ra->runs[0].summary.goodput, 0);
  EXPECT_NE(Slurp(html).find("<svg"), std::string::npos);
  const std::string out = absl::StrCat(dir, "/lt_cmp_", getpid(), ".txt");
  ASSERT_EQ(std::system(absl::StrCat(loadtest_, " compare ", a, " ", b, " > ", out).c_str()), 0);
  EXPECT_NE(Slurp(out).find("TTFT p99"), std::string::npos);
}

}  // namespace
}  // namespace compressd::loadtest
