#include "server/server.h"

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/core/logging.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace compressd::server {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", what, " file '", path, "'"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeCredentials(const TlsOptions& tls) {
  if (!tls.enabled()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions ssl;
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  ASSIGN_OR_RETURN(pair.private_key, ReadPem(tls.key_file, "--tls-key"));
  ASSIGN_OR_RETURN(pair.cert_chain, ReadPem(tls.cert_file, "--tls-cert"));
  ssl.pem_key_cert_pairs.push_back(std::move(pair));
  if (tls.mutual()) {
    ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPem(tls.client_ca_file, "--tls-client-ca"));
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

double WeightBitsPerParam(const ModelSummary& s) {
  return s.parameters == 0 ? 0.0
                           : 8.0 * static_cast<double>(s.weight_bytes) /
                                 static_cast<double>(s.parameters);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Server>> Server::Create(const ServerOptions& options) {
  RETURN_IF_ERROR(ValidateServerOptions(options));
  ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, Engine::Create(options.engine));
  return Create(options, std::move(engine));
}

absl::StatusOr<std::unique_ptr<Server>> Server::Create(const ServerOptions& options,
                                                       std::unique_ptr<Engine> engine) {
  if (engine == nullptr) return absl::InvalidArgumentError("no engine");
  std::unique_ptr<Server> server(new Server());  // private constructor
  server->engine_ = std::move(engine);
  const absl::Status st = server->Start(options);
  if (!st.ok()) {
    server->Shutdown(absl::ZeroDuration());
    return st;
  }
  return server;
}

absl::Status Server::Start(const ServerOptions& options) {
  options_ = options;
  const ModelSummary& summary = engine_->Summary();

  MetricsOptions mopts;
  mopts.host = options.metrics_host;
  mopts.port = options.metrics_port;
  Engine* engine = engine_.get();
  ASSIGN_OR_RETURN(metrics_,
                   Metrics::Create(mopts, [engine] { return engine->Stats(); },
                                   ModelGauges{summary.kv_bytes_per_token,
                                               WeightBitsPerParam(summary)}));

  service_ = std::make_unique<GenerationService>(engine_.get(), metrics_.get());
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> creds, MakeCredentials(options.tls));

  // Process-wide switches of gRPC; both must be set before the builder is created.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  grpc::ServerBuilder builder;
  const std::string addr = absl::StrCat(
      options.host.find(':') != std::string::npos && options.host.front() != '['
          ? absl::StrCat("[", options.host, "]")
          : options.host,
      ":", options.port);
  builder.AddListeningPort(addr, creds, &port_);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  // Dead TCP peers (clients that vanished without a FIN) are found within a minute or two.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60 * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20 * 1000);
  // Bounds the calls gRPC has read but no handler has taken yet. Without it a server starved
  // of CPU by other processes buffers every call an open-loop client sends meanwhile (the
  // soak's RSS rose by +44 MB in a 2.3 s stall, docs/RELIABILITY.md): HTTP/2 SETTINGS tell
  // each client to keep its calls beyond this many waiting on its side.
  const int32_t max_streams = EffectiveMaxConcurrentStreams(options);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, max_streams);
  builder.RegisterService(service_.get());
  grpc_server_ = builder.BuildAndStart();
  if (grpc_server_ == nullptr || port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", addr));
  }
  grpc::HealthCheckServiceInterface* health = grpc_server_->GetHealthCheckService();
  if (health != nullptr) {
    health->SetServingStatus(true);
    health->SetServingStatus(kServiceName, true);
  }
  LOG_INFO("serving {} ({}, {} params, {:.2f} bits/param, kv {} {:.0f} B/token) on {}:{}{}; "
           "at most {} open calls per connection; metrics {}",
           summary.model_id, summary.architecture, summary.parameters,
           WeightBitsPerParam(summary), summary.kv_codec, summary.kv_bytes_per_token,
           options.host, port_, options.tls.enabled() ? (options.tls.mutual() ? " (mTLS)" : " (TLS)") : "",
           max_streams,
           metrics_->port() == 0 ? std::string("off")
                                 : absl::StrCat(options.metrics_host, ":", metrics_->port()));
  return absl::OkStatus();
}

Server::~Server() { Shutdown(absl::Seconds(1)); }

std::string Server::address() const {
  const std::string& h = options_.host;
  const std::string host = (h == "0.0.0.0" || h.empty()) ? "127.0.0.1"
                           : (h == "::" || h == "[::]") ? "[::1]"
                                                        : h;
  return absl::StrCat(host, ":", port_);
}

void Server::BeginDrain() {
  {
    absl::MutexLock lock(&mu_);
    if (draining_ || shut_down_) return;
    draining_ = true;
  }
  LOG_INFO("draining: health NOT_SERVING, new requests UNAVAILABLE");
  if (grpc_server_ != nullptr) {
    if (grpc::HealthCheckServiceInterface* health = grpc_server_->GetHealthCheckService()) {
      health->SetServingStatus(kServiceName, false);
      health->SetServingStatus(false);
    }
  }
  engine_->StartDraining();
}

bool Server::WaitIdle(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    if (engine_->Idle() && (service_ == nullptr || service_->active_streams() == 0)) return true;
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(20));
  }
}

void Server::Shutdown(absl::Duration grace) {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
  }
  if (engine_ != nullptr) {
    const EngineStats s = engine_->Stats();
    if (s.running + s.waiting > 0) {
      LOG_WARN("shutting down with {} running and {} waiting requests; cancelling them",
               s.running, s.waiting);
    }
    // Delivers the final (cancelled) event of everything in flight, so every open stream
    // can finish before gRPC stops.
    engine_->StartDraining();
    engine_->Shutdown();
  }
  if (grpc_server_ != nullptr) {
    grpc_server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
    grpc_server_->Wait();
  }
  LOG_INFO("server stopped");
}

}  // namespace compressd::server
