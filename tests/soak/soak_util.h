// Process-level helpers for the soak and fault tests: they drive the real `compressd serve`
// and `compressd-loadtest` binaries as child processes on loopback (no gRPC in the test
// itself), read /proc/PID/status, scrape /metrics and parse the loadtest JSON report.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "nlohmann/json.hpp"

extern char** environ;

namespace compressd::soak {

using Clock = std::chrono::steady_clock;

inline std::string BinaryDir() {
  const char* env = std::getenv("COMPRESSD_BINARY_DIR");
  return env != nullptr ? env : COMPRESSD_BINARY_DIR;
}
// COMPRESSD_SERVER_BIN / COMPRESSD_LOADTEST_BIN override one binary (e.g. an ASan server
// with a release load generator).
inline std::string ServerBinary() {
  const char* env = std::getenv("COMPRESSD_SERVER_BIN");
  return env != nullptr ? env : BinaryDir() + "/server/compressd";
}
inline std::string LoadtestBinary() {
  const char* env = std::getenv("COMPRESSD_LOADTEST_BIN");
  return env != nullptr ? env : BinaryDir() + "/loadtest/compressd-loadtest";
}
inline bool Exists(const std::string& p) { return ::access(p.c_str(), X_OK) == 0; }

inline std::string TempDir() {
  const char* t = std::getenv("TEST_TMPDIR");
  std::string base = t != nullptr ? t : "/tmp";
  char tmpl[512];
  std::snprintf(tmpl, sizeof(tmpl), "%s/compressd-soak-XXXXXX", base.c_str());
  const char* d = ::mkdtemp(tmpl);
  return d != nullptr ? d : base;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

// A child process with stdout+stderr in `log`.
class Child {
 public:
  Child() = default;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      int st;
      ::waitpid(pid_, &st, 0);
    }
  }

  bool Start(const std::vector<std::string>& argv, const std::string& log) {
    log_ = log;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const int rc = ::posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    return rc == 0;
  }

  int pid() const { return pid_; }
  const std::string& log() const { return log_; }
  std::string Output() const { return ReadFile(log_); }
  bool Running() {
    if (exited_) return false;
    int st;
    const int r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      exited_ = true;
      status_ = st;
      return false;
    }
    return true;
  }
  void Signal(int sig) {
    if (!exited_) ::kill(pid_, sig);
  }
  // Exit status (WEXITSTATUS, or 128+signal), or nullopt when still running after `timeout`.
  std::optional<int> Wait(std::chrono::milliseconds timeout) {
    const auto end = Clock::now() + timeout;
    while (Running()) {
      if (Clock::now() > end) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return WIFEXITED(status_) ? WEXITSTATUS(status_) : 128 + WTERMSIG(status_);
  }

 private:
  pid_t pid_ = -1;
  bool exited_ = false;
  int status_ = 0;
  std::string log_;
};

// A numeric field of /proc/PID/status ("VmRSS" in KiB, "Threads", ...); 0 when unreadable.
inline int64_t ProcStatusField(int pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  const std::string key = field + ":";
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) return std::atoll(line.c_str() + key.size());
  }
  return 0;
}

// VmRSS of a process in KiB (0 when unreadable).
inline int64_t RssKiB(int pid) { return ProcStatusField(pid, "VmRSS"); }

// Plain HTTP/1.0 GET on 127.0.0.1; the body, or "" on failure.
inline std::string HttpGet(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return "";
  }
  const std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (::write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return "";
  }
  std::string resp;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) resp.append(buf, static_cast<size_t>(n));
  ::close(fd);
  const size_t body = resp.find("\r\n\r\n");
  return body == std::string::npos ? "" : resp.substr(body + 4);
}

// Sum of every sample of a metric family (all label sets); -1 when absent.
inline double MetricSum(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  std::string line;
  double sum = 0;
  bool found = false;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line.compare(0, name.size(), name) != 0) continue;
    const char next = line.size() > name.size() ? line[name.size()] : ' ';
    if (next != ' ' && next != '{') continue;
    const size_t sp = line.rfind(' ');
    sum += std::atof(line.c_str() + sp + 1);
    found = true;
  }
  return found ? sum : -1;
}

// A `compressd serve` child on 127.0.0.1 with its metrics port.
struct ServerProc {
  Child child;
  int port = 0;
  int metrics_port = 0;

  bool Start(const std::string& dir, std::vector<std::string> extra, int fixed_port = 0) {
    port = fixed_port != 0 ? fixed_port : FreePort();
    metrics_port = FreePort();
    std::vector<std::string> argv = {ServerBinary(), "serve", "--host", "127.0.0.1",
                                     "--port", std::to_string(port), "--metrics-port",
                                     std::to_string(metrics_port), "--log-level", "warn"};
    bool has_model = false;
    for (const auto& e : extra) has_model |= e == "--model";
    if (!has_model) argv.insert(argv.end(), {"--model", "random:tiny"});
    argv.insert(argv.end(), extra.begin(), extra.end());
    // SOAK_SERVER_FLAGS: extra flags for every server (e.g. "--no-prefix-caching").
    if (const char* env = std::getenv("SOAK_SERVER_FLAGS")) {
      std::istringstream in(env);
      for (std::string f; in >> f;) argv.push_back(f);
    }
    return child.Start(argv, dir + "/server-" + std::to_string(port) + ".log");
  }
  std::string Metrics() { return HttpGet(metrics_port, "/metrics"); }
  // /metrics answers (the server is up) within `timeout`.
  bool WaitMetrics(std::chrono::milliseconds timeout) {
    const auto end = Clock::now() + timeout;
    while (Clock::now() < end) {
      if (!child.Running()) return false;
      if (!Metrics().empty()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }
  // Running + waiting reach 0 within `timeout`.
  bool IdleWithin(std::chrono::milliseconds timeout) {
    const auto end = Clock::now() + timeout;
    while (Clock::now() < end) {
      const std::string m = Metrics();
      if (MetricSum(m, "compressd_requests_running") == 0 &&
          MetricSum(m, "compressd_requests_waiting") == 0) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }
  std::string target() const { return "127.0.0.1:" + std::to_string(port); }
};

// One loadtest run's outcome.
struct LoadResult {
  int exit_code = -1;
  nlohmann::json report;  // the --output JSON (empty when missing)
  std::map<std::string, int> by_status;  // "OK", "RESOURCE_EXHAUSTED", ...
  int total = 0;
  int ok_with_final = 0;      // status OK and a finish_reason (a final message arrived)
  int ok_without_final = 0;   // status OK but no final message: a protocol violation
  double request_throughput = 0;
  double output_token_throughput = 0;
  // (start_s, e2e_s) of every RESOURCE_EXHAUSTED request: the time the server took to refuse
  // it. Refusing costs microseconds of server CPU, so a refusal that takes seconds means
  // requests were piling up inside the server (it was not getting the CPU it needs).
  std::vector<std::pair<double, double>> refusals;
  std::string log;
};

// The worst 99th-percentile refusal latency over windows of `window_s` seconds that start at
// or after `from_s` (0 when there were no refusals), and the start of that window.
inline std::pair<double, double> WorstRefusalP99(const LoadResult& r, double from_s,
                                                 double window_s) {
  std::map<int64_t, std::vector<double>> windows;
  for (const auto& [start, e2e] : r.refusals) {
    if (start >= from_s) windows[static_cast<int64_t>((start - from_s) / window_s)].push_back(e2e);
  }
  std::pair<double, double> worst{0.0, 0.0};
  for (auto& [w, v] : windows) {
    std::sort(v.begin(), v.end());
    const double p99 = v[static_cast<size_t>(0.99 * static_cast<double>(v.size() - 1))];
    if (p99 > worst.first) worst = {p99, from_s + static_cast<double>(w) * window_s};
  }
  return worst;
}

inline LoadResult RunLoadtest(const std::string& dir, const std::string& target,
                              std::vector<std::string> flags,
                              std::chrono::milliseconds timeout, const std::string& tag) {
  LoadResult r;
  const std::string out = dir + "/loadtest-" + tag + ".json";
  std::vector<std::string> argv = {LoadtestBinary(), "--target", target, "--output", out,
                                   "--wait_ready", "60"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  Child lt;
  if (!lt.Start(argv, dir + "/loadtest-" + tag + ".log")) return r;
  const auto code = lt.Wait(timeout);
  if (!code.has_value()) lt.Signal(SIGKILL);
  r.exit_code = code.value_or(-1);
  r.log = lt.Output();
  const std::string text = ReadFile(out);
  if (text.empty()) return r;
  r.report = nlohmann::json::parse(text, nullptr, false);
  if (r.report.is_discarded() || !r.report.contains("runs")) return r;
  for (const auto& run : r.report["runs"]) {
    if (run.contains("summary")) {
      r.request_throughput = run["summary"].value("request_throughput", 0.0);
      r.output_token_throughput = run["summary"].value("output_token_throughput", 0.0);
    }
    if (!run.contains("requests")) continue;
    for (const auto& q : run["requests"]) {
      ++r.total;
      const std::string st = q.value("status", std::string("?"));
      ++r.by_status[st];
      if (st == "RESOURCE_EXHAUSTED") {
        r.refusals.emplace_back(q.value("start_s", 0.0), q.value("e2e_s", 0.0));
      }
      if (st == "OK") {
        if (q.value("finish_reason", std::string()).empty()) {
          ++r.ok_without_final;
        } else {
          ++r.ok_with_final;
        }
      }
    }
  }
  return r;
}

inline int Count(const LoadResult& r, const std::string& status) {
  auto it = r.by_status.find(status);
  return it == r.by_status.end() ? 0 : it->second;
}

inline std::string Describe(const LoadResult& r) {
  std::string s = "exit=" + std::to_string(r.exit_code) + " total=" + std::to_string(r.total);
  for (const auto& [k, v] : r.by_status) s += " " + k + "=" + std::to_string(v);
  s += " ok_without_final=" + std::to_string(r.ok_without_final);
  return s;
}

}  // namespace compressd::soak
