// compressd.v1.Generation on gRPC's callback API: no thread is held by an idle or slow
// stream. Each Generate call is one GenerateCall state object (generate_call.h); the unary
// RPCs answer inline on the gRPC callback thread.
//
// Threads: RPC handlers run on gRPC callback threads; engine events arrive on the engine
// thread. The service does not own the engine or the metrics; both must outlive the
// grpc::Server that hosts the service.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "compressd/v1/generation.grpc.pb.h"
#include "engine/engine.h"
#include "server/metrics.h"
#include "server/validation.h"

namespace compressd::server {

// Replaces every invalid or truncated UTF-8 sequence with U+FFFD (one per bad byte).
std::string ToValidUtf8(const std::string& bytes);

class GenerationService final : public v1::Generation::CallbackService {
 public:
  // metrics may be null.
  GenerationService(Engine* engine, Metrics* metrics);

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context,
                                       const v1::DetokenizeRequest* request,
                                       v1::DetokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;

  // Generate streams whose final message has not been written yet.
  int64_t active_streams() const { return active_streams_.load(); }

  // --- used by GenerateCall -----------------------------------------------------------
  Engine& engine() { return *engine_; }
  Metrics* metrics() { return metrics_; }
  // Validates, tokenizes and builds the engine request, with a unique request id claimed
  // (ALREADY_EXISTS when a client-chosen id is in flight). Release it with ReleaseId.
  absl::StatusOr<GenerationRequest> Prepare(const v1::GenerateRequest& request);
  void ReleaseId(const std::string& id);
  void StreamStarted() { active_streams_.fetch_add(1); }
  void StreamEnded() { active_streams_.fetch_sub(1); }

 private:
  absl::StatusOr<std::vector<int32_t>> PromptTokens(const v1::GenerateRequest& request) const;

  Engine* engine_;
  Metrics* metrics_;
  ModelLimits limits_;
  std::atomic<int64_t> active_streams_{0};
  std::atomic<uint64_t> next_id_{1};
  std::string id_prefix_;

  absl::Mutex ids_mu_;
  absl::flat_hash_set<std::string> in_flight_ids_ ABSL_GUARDED_BY(ids_mu_);
};

}  // namespace compressd::server
