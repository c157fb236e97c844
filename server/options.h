// ServerOptions: everything `compressd serve` can be told, as a plain struct with defaults,
// and the hand-written argv parser behind it. Hand-written rather than absl flags so that
// the options of one subcommand are not process-wide globals shared with the others in the
// same binary.
//
// Parsing is a pure function: it never exits and never prints; cmd_serve.cc decides.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "engine/core/status.h"
#include "engine/engine.h"

namespace compressd::server {

struct TlsOptions {
  // PEM files. cert + key turn TLS on; client_ca additionally requires and verifies client
  // certificates (mTLS).
  std::string cert_file;
  std::string key_file;
  std::string client_ca_file;

  bool enabled() const { return !cert_file.empty() || !key_file.empty(); }
  bool mutual() const { return !client_ca_file.empty(); }
};

struct ServerOptions {
  std::string host = "0.0.0.0";
  int32_t port = 50051;  // 0 = pick a free port (tests)
  std::string metrics_host = "127.0.0.1";
  int32_t metrics_port = 9090;  // 0 = no metrics endpoint
  // How long SIGTERM waits for running requests before cancelling them.
  absl::Duration drain_timeout = absl::Seconds(30);
  int32_t max_message_bytes = 16 << 20;  // gRPC receive and send limit
  // HTTP/2 streams (calls of any method) one client connection may have open at once
  // (GRPC_ARG_MAX_CONCURRENT_STREAMS). It bounds the calls gRPC reads and buffers before a
  // handler takes them: a client's calls beyond it wait in the client, so a server starved
  // of CPU holds at most this many calls per connection instead of an unbounded backlog.
  // 0 = automatic: engine.max_running + engine.max_queue + kStreamHeadroom (the calls the
  // engine can hold, plus room for refusals and unary calls in flight);
  // see EffectiveMaxConcurrentStreams.
  int32_t max_concurrent_streams = 0;
  TlsOptions tls;
  std::string log_level = "info";
  EngineOptions engine;
};

// The result of parsing argv: either options or a request for help.
struct ParsedServeArgs {
  ServerOptions options;
  bool help = false;
};

// argv[0] is the subcommand name and is skipped. Accepts --name=value and --name value;
// boolean options also accept a bare --name and --no-name. Unknown options, missing values
// and malformed numbers return INVALID_ARGUMENT naming the option.
absl::StatusOr<ParsedServeArgs> ParseServeArgs(int argc, const char* const* argv);

// Checks cross-field consistency (ports in range, TLS cert and key together, model set).
absl::Status ValidateServerOptions(const ServerOptions& options);

// Streams beyond the engine's running + waiting capacity allowed per connection when
// --max-concurrent-streams is 0: calls the engine will refuse (RESOURCE_EXHAUSTED) or that are
// not Generate (Tokenize, health) still get through while the engine is full.
inline constexpr int32_t kStreamHeadroom = 64;

// The per-connection stream bound the server applies: options.max_concurrent_streams, or
// when it is 0, engine.max_running + engine.max_queue + kStreamHeadroom (capped at 2^31-1).
int32_t EffectiveMaxConcurrentStreams(const ServerOptions& options);

// `compressd serve --help`: one line per option with its default.
std::string ServeUsage();

// "30s", "1.5m", "500ms" (absl duration syntax) or a bare number of seconds.
absl::StatusOr<absl::Duration> ParseDurationFlag(const std::string& text);

}  // namespace compressd::server
