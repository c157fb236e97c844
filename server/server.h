// Server: one engine, the gRPC server that hosts GenerationService (plus grpc.health.v1
// and reflection), and the metrics endpoint. Owns all three and tears them down in order.
//
// Lifecycle: Create (engine loaded, ports bound, health SERVING) -> BeginDrain (health
// NOT_SERVING for "" and "compressd.v1.Generation", new Generate calls UNAVAILABLE) ->
// WaitIdle(timeout) -> Shutdown (in-flight requests cancelled, gRPC stopped, engine
// joined). Signals are not handled here; `compressd serve` (cmd_serve.cc) maps
// SIGTERM/SIGINT onto this sequence. All methods may be called from any thread.
#pragma once

#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/core/status.h"
#include "engine/engine.h"
#include "grpcpp/server.h"
#include "server/generation_service.h"
#include "server/metrics.h"
#include "server/options.h"

namespace compressd::server {

inline constexpr char kServiceName[] = "compressd.v1.Generation";

class Server {
 public:
  // Loads the engine from options.engine, then starts serving.
  static absl::StatusOr<std::unique_ptr<Server>> Create(const ServerOptions& options);
  // Serves an engine created by the caller (tests share one loaded model this way).
  static absl::StatusOr<std::unique_ptr<Server>> Create(const ServerOptions& options,
                                                        std::unique_ptr<Engine> engine);
  ~Server();

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The bound ports (resolved when the options asked for port 0).
  int port() const { return port_; }
  int metrics_port() const { return metrics_ == nullptr ? 0 : metrics_->port(); }
  // "host:port" a client on this machine can dial.
  std::string address() const;

  Engine& engine() { return *engine_; }
  Metrics* metrics() { return metrics_.get(); }
  GenerationService& service() { return *service_; }

  void BeginDrain();
  // True when the engine became idle and every stream wrote its final message before
  // `timeout` elapsed.
  bool WaitIdle(absl::Duration timeout);
  // Cancels whatever still runs, stops gRPC (waiting up to `grace` for calls to end) and
  // joins the engine. Idempotent.
  void Shutdown(absl::Duration grace = absl::Seconds(5));

 private:
  Server() = default;
  absl::Status Start(const ServerOptions& options);

  ServerOptions options_;
  // Destruction order matters: the gRPC server (and its reactors, which reference the
  // service, the engine and the metrics) goes first.
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<GenerationService> service_;
  std::unique_ptr<grpc::Server> grpc_server_;
  int port_ = 0;

  absl::Mutex mu_;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace compressd::server
