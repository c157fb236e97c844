#include "server/generate_call.h"

#include <utility>

#include "absl/time/clock.h"
#include "engine/core/logging.h"
#include "engine/model/tokenizer.h"
#include "server/generation_service.h"
#include "server/status_map.h"

namespace compressd::server {
namespace {

v1::FinishReason ToProto(FinishReason r) {
  switch (r) {
    case FinishReason::kStop: return v1::FINISH_REASON_STOP;
    case FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    case FinishReason::kCancelled: return v1::FINISH_REASON_CANCELLED;
    case FinishReason::kError: return v1::FINISH_REASON_ERROR;
    case FinishReason::kNone: break;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

const char* ReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kError: return "error";
    case FinishReason::kNone: break;
  }
  return "none";
}

void FillUsage(const Usage& u, v1::Usage* out) {
  out->set_prompt_tokens(static_cast<uint32_t>(u.prompt_tokens));
  out->set_completion_tokens(static_cast<uint32_t>(u.completion_tokens));
  out->set_cached_tokens(static_cast<uint32_t>(u.cached_tokens));
  out->set_time_to_first_token_s(u.time_to_first_token_s);
  out->set_e2e_latency_s(u.e2e_latency_s);
  out->set_queue_time_s(u.queue_time_s);
  out->set_kv_bytes(u.kv_bytes);
  out->set_preemptions(static_cast<uint32_t>(u.preemptions));
}

void FillLogprob(const Tokenizer& tok, const TokenLogprob& lp, v1::TokenLogprob* out) {
  out->set_token_id(static_cast<uint32_t>(lp.token_id));
  if (lp.token_id >= 0 && lp.token_id < tok.vocab_size()) {
    out->set_token(ToValidUtf8(tok.Piece(lp.token_id)));
  }
  out->set_logprob(lp.logprob);
}

}  // namespace

GenerateCall::GenerateCall(GenerationService* service) : service_(service) {}

grpc::ServerWriteReactor<v1::GenerateResponse>* GenerateCall::Start(
    GenerationService* service, grpc::CallbackServerContext* context,
    const v1::GenerateRequest& request) {
  // The context is gRPC's for the call's whole life; cancellation reaches us through
  // OnCancel, so the call keeps no pointer to it.
  (void)context;
  auto call = std::make_shared<GenerateCall>(service);
  call->self_ = call;
  GenerateCall* raw = call.get();

  absl::StatusOr<GenerationRequest> prepared = service->Prepare(request);
  if (!prepared.ok()) {
    raw->FinishEarly(ToGrpcStatus(prepared.status()));
    return raw;
  }
  raw->request_id_ = prepared->request_id;
  {
    absl::MutexLock lock(&raw->mu_);
    raw->last_token_time_ = absl::Now();
    raw->submitted_ = true;  // Cancel of an id the engine never accepted is ignored
  }
  service->StreamStarted();
  raw->stream_counted_ = true;
  // The callback keeps the call alive until the engine drops it after the final event.
  const absl::Status st = service->engine().Submit(
      std::move(*prepared), [call](GenerationEvent&& ev) { call->OnEvent(std::move(ev)); });
  if (!st.ok()) {
    service->ReleaseId(raw->request_id_);
    service->StreamEnded();
    raw->stream_counted_ = false;
    raw->FinishEarly(ToGrpcStatus(st));
  }
  return raw;
}

void GenerateCall::FinishEarly(const grpc::Status& status) {
  {
    absl::MutexLock lock(&mu_);
    finish_started_ = true;
  }
  Finish(status);
}

void GenerateCall::MergeLocked(GenerationEvent& ev) {
  if (!pending_.has_value()) {
    pending_.emplace();
    pending_->set_request_id(request_id_);
  }
  v1::GenerateResponse& r = *pending_;
  r.mutable_text()->append(ev.text);
  const Tokenizer& tok = service_->engine().tokenizer();
  for (size_t i = 0; i < ev.token_ids.size(); ++i) {
    r.add_token_ids(static_cast<uint32_t>(ev.token_ids[i]));
    if (i < ev.chosen_logprobs.size()) {
      v1::Logprobs* lp = r.add_logprobs();
      FillLogprob(tok, ev.chosen_logprobs[i], lp->mutable_chosen());
      if (i < ev.top_logprobs.size()) {
        for (const TokenLogprob& t : ev.top_logprobs[i]) FillLogprob(tok, t, lp->add_top());
      }
    }
  }
  if (!ev.token_ids.empty()) {
    // The first token's latency is TTFT (reported in usage); later gaps are inter-token
    // latencies, spread evenly when one event carries several tokens.
    const absl::Time now = absl::Now();
    Metrics* m = service_->metrics();
    if (m != nullptr && seen_token_) {
      const double per = absl::ToDoubleSeconds(now - last_token_time_) /
                         static_cast<double>(ev.token_ids.size());
      for (size_t i = 0; i < ev.token_ids.size(); ++i) m->ObserveInterTokenLatency(per);
    }
    seen_token_ = true;
    last_token_time_ = now;
  }
}

void GenerateCall::FinalLocked(GenerationEvent& ev) {
  step_ = Step::kFinalQueued;
  v1::GenerateResponse& r = *pending_;
  r.set_finished(true);
  r.set_finish_reason(ToProto(ev.finish_reason));
  r.set_stop_reason(ToValidUtf8(ev.stop_reason));
  FillUsage(ev.usage, r.mutable_usage());
  switch (ev.finish_reason) {
    case FinishReason::kError:
      final_status_ = ev.error.ok() ? grpc::Status(grpc::StatusCode::INTERNAL,
                                                   "generation failed without a reason")
                                    : ToGrpcStatus(ev.error);
      break;
    case FinishReason::kCancelled:
      // Not asked for by this client (it would be broken_): the server is shutting down.
      final_status_ = broken_ ? grpc::Status(grpc::StatusCode::CANCELLED, "request cancelled")
                              : grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                             "request cancelled by the server (shutting down)");
      break;
    default:
      final_status_ = grpc::Status::OK;
      break;
  }
  if (Metrics* m = service_->metrics()) m->ObserveFinished(ev.finish_reason, ev.usage);
  LOG_INFO(
      "request id={} prompt_tokens={} completion_tokens={} cached_tokens={} ttft_s={:.4f} "
      "e2e_s={:.4f} queue_s={:.4f} preemptions={} finish_reason={} stop_reason=\"{}\"{}{}",
      request_id_, ev.usage.prompt_tokens, ev.usage.completion_tokens, ev.usage.cached_tokens,
      ev.usage.time_to_first_token_s, ev.usage.e2e_latency_s, ev.usage.queue_time_s,
      ev.usage.preemptions, ReasonName(ev.finish_reason), r.stop_reason(),
      ev.error.ok() ? "" : " error=", ev.error.ok() ? "" : ev.error.ToString());
}

void GenerateCall::OnEvent(GenerationEvent&& ev) {
  {
    absl::MutexLock lock(&mu_);
    if (step_ != Step::kGenerating) return;  // the engine promised one final event
    MergeLocked(ev);
    if (ev.finished) FinalLocked(ev);
  }
  if (ev.finished) {
    service_->ReleaseId(request_id_);
    if (stream_counted_) service_->StreamEnded();
  }
  Pump();
}

void GenerateCall::Pump() {
  Action action = Action::kNone;
  grpc::Status finish_status;
  {
    absl::MutexLock lock(&mu_);
    if (write_in_flight_ || finish_started_) return;
    if (broken_) {
      // Nothing more can be written; finish once the engine has let go of the request.
      if (step_ != Step::kGenerating) {
        action = Action::kFinish;
        finish_status = final_status_.ok()
                            ? grpc::Status(grpc::StatusCode::CANCELLED, "request cancelled")
                            : final_status_;
      }
    } else if (pending_.has_value()) {
      if (pending_->finished() && !final_status_.ok()) {
        // Errors end the stream with a status, not with a final message.
        action = Action::kFinish;
        finish_status = final_status_;
        pending_.reset();
      } else {
        action = Action::kWrite;
        writing_ = std::move(*pending_);
        pending_.reset();
        if (writing_.finished()) step_ = Step::kFinished;
      }
    } else if (step_ == Step::kFinished) {
      action = Action::kFinish;
      finish_status = grpc::Status::OK;
    }
    if (action == Action::kWrite) write_in_flight_ = true;
    if (action == Action::kFinish) finish_started_ = true;
  }
  if (action == Action::kWrite) StartWrite(&writing_);
  if (action == Action::kFinish) Finish(finish_status);
}

void GenerateCall::CancelEngineRequest() {
  bool send = false;
  {
    absl::MutexLock lock(&mu_);
    broken_ = true;
    if (submitted_ && step_ == Step::kGenerating && !engine_cancel_sent_) {
      engine_cancel_sent_ = true;
      send = true;
    }
  }
  if (send) service_->engine().Cancel(request_id_);
}

void GenerateCall::OnWriteDone(bool ok) {
  {
    absl::MutexLock lock(&mu_);
    write_in_flight_ = false;
    writing_.Clear();
  }
  if (!ok) CancelEngineRequest();
  Pump();
}

void GenerateCall::OnCancel() {
  CancelEngineRequest();
  Pump();
}

void GenerateCall::OnDone() {
  // Drops gRPC's reference; the engine callback may still hold one for a moment.
  std::shared_ptr<GenerateCall> last = std::move(self_);
}

}  // namespace compressd::server
