// The server seen by real outside programs: Debian's Prometheus scraping the metrics port
// (read back through its HTTP API) and the example Python client.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/server/server_test_util.h"

extern char** environ;

namespace compressd::server::testing {
namespace {

constexpr char kModel[] = "models/stories260K";
constexpr char kPrompt[] = "Once upon a time";

std::string MakeTempDir() {
  std::string tmpl = ::testing::TempDir() + "compressd_srv_XXXXXX";
  return ::mkdtemp(tmpl.data()) == nullptr ? "" : tmpl;
}

// A child process started with posix_spawn; killed (SIGTERM, then SIGKILL) and reaped on
// destruction.
class Child {
 public:
  Child(const std::vector<std::string>& argv, const std::string& log_path) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    if (posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&fa);
  }
  ~Child() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 100; ++i) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  bool started() const { return pid_ > 0; }

 private:
  pid_t pid_ = -1;
};

TEST(ExternalClientsTest, PrometheusScrapesRequestsTotal) {
  REQUIRE_SHARED(model, kModel);
  const std::string prometheus = "/usr/bin/prometheus";
  if (::access(prometheus.c_str(), X_OK) != 0) GTEST_SKIP() << "no " << prometheus;

  const int metrics_port = FreePort();
  auto live = LiveServer::Start(model, metrics_port);
  ASSERT_NE(live, nullptr);
  constexpr int kRequests = 3;
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(RunGenerate(live->stub.get(), Greedy(kPrompt, 4)).status.ok());
  }

  const std::string dir = MakeTempDir();
  ASSERT_FALSE(dir.empty());
  {
    std::ofstream cfg(dir + "/prometheus.yml");
    cfg << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        << "scrape_configs:\n  - job_name: compressd\n    static_configs:\n"
        << "      - targets: ['127.0.0.1:" << metrics_port << "']\n";
  }
  const int web_port = FreePort();
  Child prom({prometheus, "--config.file=" + dir + "/prometheus.yml",
              "--storage.tsdb.path=" + dir + "/data",
              "--web.listen-address=127.0.0.1:" + std::to_string(web_port)},
             dir + "/prometheus.log");
  ASSERT_TRUE(prom.started());

  double total = -1;
  std::string last_body;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < end && total < kRequests) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    last_body = HttpGet(web_port, "/api/v1/query?query=sum(compressd_requests_total)");
    const auto j = nlohmann::json::parse(last_body, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || j.value("status", "") != "success") continue;
    const auto& result = j["data"]["result"];
    if (result.empty()) continue;
    total = std::stod(result[0]["value"][1].get<std::string>());
  }
  EXPECT_EQ(total, kRequests) << last_body << "\n"
                              << compressd::testing::ReadFileOrDie(dir + "/prometheus.log");

  // A label survives the trip as well.
  const std::string by_reason = HttpGet(
      web_port, "/api/v1/query?query=compressd_requests_total%7Bfinish_reason%3D%22cancelled%22%7D");
  EXPECT_THAT(by_reason, ::testing::HasSubstr("\"finish_reason\":\"cancelled\""));
}

TEST(ExternalClientsTest, PythonClientStreamsTheSameText) {
  REQUIRE_SHARED(model, kModel);
  if (::access("/usr/bin/python3", X_OK) != 0) GTEST_SKIP() << "no /usr/bin/python3";
  auto live = LiveServer::Start(model);
  ASSERT_NE(live, nullptr);
  const StreamResult expected = RunGenerate(live->stub.get(), Greedy(kPrompt, 20));
  ASSERT_TRUE(expected.status.ok());

  const std::string dir = MakeTempDir();
  const std::string out_path = dir + "/out.txt";
  const std::string cmd = "/usr/bin/python3 " + compressd::testing::SourceDir() +
                          "/clients/python/compressd_client.py --address " +
                          live->server->address() + " --prompt '" + kPrompt +
                          "' --max-tokens 20 --temperature 0 --usage > " + out_path +
                          " 2> " + dir + "/err.txt";
  const int rc = std::system(cmd.c_str());
  const std::string err = compressd::testing::ReadFileOrDie(dir + "/err.txt");
  ASSERT_EQ(rc, 0) << err;
  EXPECT_EQ(compressd::testing::ReadFileOrDie(out_path), expected.text + "\n");
  EXPECT_THAT(err, ::testing::HasSubstr("completion_tokens="));

  // Errors come back as a status on stderr and exit code 1; the server keeps serving.
  const std::string bad = "/usr/bin/python3 " + compressd::testing::SourceDir() +
                          "/clients/python/compressd_client.py --address " +
                          live->server->address() + " --max-tokens 100000 > /dev/null 2> " +
                          dir + "/err2.txt";
  EXPECT_EQ(WEXITSTATUS(std::system(bad.c_str())), 1);
  EXPECT_THAT(compressd::testing::ReadFileOrDie(dir + "/err2.txt"),
              ::testing::HasSubstr("INVALID_ARGUMENT"));
  EXPECT_TRUE(RunGenerate(live->stub.get(), Greedy(kPrompt, 2)).status.ok());
}

// `compressd serve` as a process: SIGTERM drains (a running request still completes, health
// turns NOT_SERVING) and the process exits 0.
TEST(ExternalClientsTest, ServeBinaryDrainsOnSigterm) {
  REQUIRE_SHARED(model, kModel);
  const std::string bin = compressd::testing::BinaryDir() + "/server/compressd";
  if (::access(bin.c_str(), X_OK) != 0) GTEST_SKIP() << bin << " not built";
  const std::string dir = MakeTempDir();
  const int port = FreePort();
  pid_t pid = -1;
  {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    const std::string log = dir + "/serve.log";
    posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<std::string> argv = {bin, "serve", "--model", model, "--host", "127.0.0.1",
                                     "--port", std::to_string(port), "--metrics-port", "0",
                                     "--drain-timeout", "30s"};
    std::vector<char*> args;
    for (std::string& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    ASSERT_EQ(posix_spawn(&pid, bin.c_str(), &fa, nullptr, args.data(), environ), 0);
    posix_spawn_file_actions_destroy(&fa);
  }
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                     grpc::InsecureChannelCredentials());
  auto stub = v1::Generation::NewStub(channel);
  int health = -1;
  for (int i = 0; i < 300 && health != 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    health = HealthCheck(channel.get(), "compressd.v1.Generation");
  }
  ASSERT_EQ(health, 1) << compressd::testing::ReadFileOrDie(dir + "/serve.log");

  v1::GenerateRequest req = Greedy(kPrompt, 200);
  req.set_ignore_eos(true);
  grpc::ClientContext ctx;
  auto reader = stub->Generate(&ctx, req);
  v1::GenerateResponse msg;
  ASSERT_TRUE(reader->Read(&msg));  // running in the engine
  size_t tokens = msg.token_ids_size();
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  while (reader->Read(&msg)) tokens += msg.token_ids_size();
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(tokens, 200u);

  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  const std::string log = compressd::testing::ReadFileOrDie(dir + "/serve.log");
  EXPECT_THAT(log, ::testing::HasSubstr("received SIGTERM"));
  EXPECT_THAT(log, ::testing::HasSubstr("completion_tokens=200"));
}

TEST(ExternalClientsTest, ServeBinaryRejectsUnknownOptions) {
  const std::string bin = compressd::testing::BinaryDir() + "/server/compressd";
  if (::access(bin.c_str(), X_OK) != 0) GTEST_SKIP() << bin << " not built";
  EXPECT_EQ(WEXITSTATUS(std::system((bin + " serve --no-such-flag 2>/dev/null").c_str())), 2);
  EXPECT_EQ(WEXITSTATUS(std::system((bin + " serve --port=x 2>/dev/null").c_str())), 2);
  EXPECT_EQ(WEXITSTATUS(std::system((bin + " serve --help >/dev/null").c_str())), 0);
}

}  // namespace
}  // namespace compressd::server::testing
