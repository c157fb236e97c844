// GenerateCall: the per-RPC state of one Generate stream (a gRPC ServerWriteReactor).
//
// Lifetime: the object owns itself through `self_` until gRPC calls OnDone, and the engine's
// event callback holds another reference until the engine drops it, so neither side can
// free it under the other. Finish is called only after the engine's final event (the engine
// guarantees exactly one), so the engine never holds a request whose stream is gone.
//
// Flow: engine events are merged into one pending response while a write is in flight
// (a slow reader gets fewer, larger messages instead of an unbounded queue). A client
// cancel, disconnect or deadline (OnCancel) or a failed write cancels the engine request;
// its final (cancelled) event then finishes the call.
//
// Step: kGenerating -> (final event) kFinalQueued -> (final written) kFinished.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "compressd/v1/generation.grpc.pb.h"
#include "engine/engine.h"

namespace compressd::server {

class GenerationService;

class GenerateCall final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  // Validates and submits; on any error the returned reactor finishes with that status.
  static grpc::ServerWriteReactor<v1::GenerateResponse>* Start(
      GenerationService* service, grpc::CallbackServerContext* context,
      const v1::GenerateRequest& request);

  explicit GenerateCall(GenerationService* service);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  enum class Step { kGenerating, kFinalQueued, kFinished };
  // What Pump decided to do once the lock is released.
  enum class Action { kNone, kWrite, kFinish };

  void OnEvent(GenerationEvent&& event);  // engine thread
  void MergeLocked(GenerationEvent& event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinalLocked(GenerationEvent& event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Starts the next write or the Finish when nothing is in flight. Never holds mu_ while
  // calling into gRPC.
  void Pump();
  void CancelEngineRequest();
  // Ends a call that never reached the engine (bad request, queue full, draining).
  void FinishEarly(const grpc::Status& status);

  GenerationService* const service_;
  std::shared_ptr<GenerateCall> self_;
  std::string request_id_;

  absl::Mutex mu_;
  Step step_ ABSL_GUARDED_BY(mu_) = Step::kGenerating;
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_started_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;  // cancelled or a write failed
  bool engine_cancel_sent_ ABSL_GUARDED_BY(mu_) = false;
  bool submitted_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<v1::GenerateResponse> pending_ ABSL_GUARDED_BY(mu_);
  grpc::Status final_status_ ABSL_GUARDED_BY(mu_);
  absl::Time last_token_time_ ABSL_GUARDED_BY(mu_);
  bool seen_token_ ABSL_GUARDED_BY(mu_) = false;
  bool stream_counted_ = false;

  // The message gRPC is writing; only touched by the holder of write_in_flight_.
  v1::GenerateResponse writing_;
};

}  // namespace compressd::server
