// `compressd serve`: parse options, start the server, and turn SIGTERM/SIGINT into a
// drain: health NOT_SERVING, new requests UNAVAILABLE, running requests finish (at most
// --drain-timeout; a second signal cuts the wait short), then shutdown and exit 0.
#include <csignal>
#include <cstdio>
#include <pthread.h>

#include "absl/time/clock.h"
#include "engine/core/logging.h"
#include "server/cli/commands.h"
#include "server/malloc_tuning.h"
#include "server/options.h"
#include "server/server.h"

namespace compressd::cli {
namespace {

// Returns the signal received, or 0 when `timeout` passed first.
int WaitForSignal(const sigset_t& set, absl::Duration timeout) {
  const timespec ts = absl::ToTimespec(timeout);
  const int sig = sigtimedwait(&set, nullptr, &ts);
  return sig > 0 ? sig : 0;
}

}  // namespace

int RunServe(int argc, char** argv) {
  absl::StatusOr<server::ParsedServeArgs> parsed = server::ParseServeArgs(argc, argv);
  if (!parsed.ok()) {
    std::fprintf(stderr, "compressd serve: %s\n", std::string(parsed.status().message()).c_str());
    return 2;
  }
  if (parsed->help) {
    std::fputs(server::ServeUsage().c_str(), stdout);
    return 0;
  }
  const server::ServerOptions& options = parsed->options;
  if (absl::Status st = server::ValidateServerOptions(options); !st.ok()) {
    std::fprintf(stderr, "compressd serve: %s\n", std::string(st.message()).c_str());
    return 2;
  }
  InitLogging(options.log_level);
  // Before any thread exists (gRPC, the engine's pool): see server/malloc_tuning.h.
  LOG_INFO("{}", server::TuneMallocForServing());

  // Block the signals before any thread exists so that every thread inherits the mask and
  // only sigtimedwait below receives them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  absl::StatusOr<std::unique_ptr<server::Server>> srv = server::Server::Create(options);
  if (!srv.ok()) {
    LOG_ERROR("cannot start: {}", srv.status().ToString());
    return 1;
  }
  int sig = 0;
  while (sig == 0) sig = WaitForSignal(set, absl::Hours(1));
  LOG_INFO("received {}; draining for up to {}", sig == SIGTERM ? "SIGTERM" : "SIGINT",
           absl::FormatDuration(options.drain_timeout));
  (*srv)->BeginDrain();

  const absl::Time deadline = absl::Now() + options.drain_timeout;
  bool idle = false;
  while (!idle) {
    idle = (*srv)->WaitIdle(absl::ZeroDuration());
    const absl::Duration left = deadline - absl::Now();
    if (idle || left <= absl::ZeroDuration()) break;
    if (WaitForSignal(set, std::min(left, absl::Milliseconds(50))) != 0) {
      LOG_WARN("second signal: not waiting for running requests");
      break;
    }
  }
  if (!idle) LOG_WARN("drain ended before all requests finished; cancelling the rest");
  (*srv)->Shutdown();
  srv->reset();
  return 0;
}

}  // namespace compressd::cli
