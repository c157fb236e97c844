#include "loadtest/runner.h"

#include <algorithm>
#include <chrono>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "compressd/v1/generation.grpc.pb.h"
#include "loadtest/arrivals.h"

namespace compressd::loadtest {
namespace {

using Clock = std::chrono::steady_clock;
namespace pb = ::compressd::v1;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::string FinishReasonName(pb::FinishReason r) {
  switch (r) {
    case pb::FINISH_REASON_STOP:
      return "stop";
    case pb::FINISH_REASON_LENGTH:
      return "length";
    case pb::FINISH_REASON_CANCELLED:
      return "cancelled";
    case pb::FINISH_REASON_ERROR:
      return "error";
    default:
      return "";
  }
}

// One in-flight Generate stream. Owned by the Runner loop; deleted after its Finish event.
struct Call {
  enum class Step { kStart, kRead, kFinish };
  Step step = Step::kStart;
  grpc::ClientContext ctx;
  pb::GenerateResponse response;
  grpc::Status status;
  std::unique_ptr<grpc::ClientAsyncReader<pb::GenerateResponse>> reader;
  RequestRecord record;
  Clock::time_point sent;
  Clock::time_point last_token;
  bool has_token = false;
  int prompt_words = 0;

  // Accounts for the tokens of `response`, received at `now`.
  void OnMessage(Clock::time_point now) {
    int k = response.token_ids_size();
    if (k == 0 && !response.text().empty()) k = 1;  // a server that streams text only
    if (k > 0) {
      if (!has_token) {
        record.ttft_s = Seconds(now - sent);
        // Tokens that arrive together with the first one have no gap to measure.
        for (int i = 1; i < k; ++i) record.itl_s.push_back(0.0f);
        has_token = true;
      } else {
        const float gap = static_cast<float>(Seconds(now - last_token) / k);
        for (int i = 0; i < k; ++i) record.itl_s.push_back(gap);
      }
      last_token = now;
      record.output_tokens += k;
    }
    if (response.finished()) {
      record.finish_reason = FinishReasonName(response.finish_reason());
      if (response.has_usage()) {
        const pb::Usage& u = response.usage();
        if (u.prompt_tokens() > 0) record.prompt_tokens = u.prompt_tokens();
        // The server's count is authoritative when it differs from what was streamed.
        if (u.completion_tokens() > 0) record.output_tokens = u.completion_tokens();
      }
    }
  }
};

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect(const std::string& target, double timeout_s,
                                                       const std::string& lb_policy) {
  grpc::ChannelArguments args;
  if (!lb_policy.empty()) args.SetLoadBalancingPolicyName(lb_policy);
  args.SetMaxReceiveMessageSize(64 << 20);
  // Many streams share one HTTP/2 connection; lift the default stream cap of the client.
  args.SetInt(GRPC_ARG_MAX_CONCURRENT_STREAMS, 1 << 20);
  auto channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  const auto deadline = std::chrono::system_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  if (!channel->WaitForConnected(deadline)) {
    return absl::UnavailableError(
        absl::StrCat("cannot connect to ", target, " within ", timeout_s, " s"));
  }
  return channel;
}

RunResult RunLoad(const std::shared_ptr<grpc::Channel>& channel, const std::vector<WorkItem>& items,
                  const RunSpec& spec) {
  RunResult result;
  auto stub = pb::Generation::NewStub(channel);
  grpc::CompletionQueue cq;
  const bool open_loop = !spec.arrivals.empty();
  const int n = static_cast<int>(items.size());
  const int concurrency = std::max(1, spec.concurrency);
  std::unordered_set<Call*> in_flight;
  std::vector<RequestRecord> done;
  done.reserve(n);
  int next = 0;
  bool stopped = false;
  const Clock::time_point start = Clock::now();
  const Clock::time_point limit =
      spec.duration_limit_s > 0 ? start + std::chrono::duration_cast<Clock::duration>(
                                              std::chrono::duration<double>(spec.duration_limit_s))
                                : Clock::time_point::max();
  auto at = [&](double s) {
    return start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  };

  auto send = [&](int i) {
    auto* call = new Call;
    const WorkItem& item = items[i];
    pb::GenerateRequest req;
    req.set_prompt(item.prompt);
    req.set_max_tokens(item.max_tokens);
    req.set_ignore_eos(spec.ignore_eos);
    req.set_request_id(absl::StrCat("loadtest-", i));
    req.mutable_sampling()->set_temperature(spec.temperature);
    if (!spec.kv_cache.empty()) req.set_kv_cache(spec.kv_cache);
    if (spec.temperature > 0) req.mutable_sampling()->set_seed(spec.seed + i);
    call->record.index = i;
    call->record.prompt_tokens = item.prompt_words;
    call->ctx.set_deadline(
        std::chrono::system_clock::now() +
        std::chrono::milliseconds(static_cast<int64_t>(spec.request_timeout_s * 1000)));
    call->sent = Clock::now();
    call->record.start_s = Seconds(call->sent - start);
    call->reader = stub->PrepareAsyncGenerate(&call->ctx, req, &cq);
    call->step = Call::Step::kStart;
    call->reader->StartCall(call);
    in_flight.insert(call);
  };

  auto handle = [&](Call* call, bool ok) {
    switch (call->step) {
      case Call::Step::kStart:
      case Call::Step::kRead:
        if (call->step == Call::Step::kRead && ok) call->OnMessage(Clock::now());
        if (ok) {
          call->step = Call::Step::kRead;
          call->reader->Read(&call->response, call);
        } else {
          call->step = Call::Step::kFinish;
          call->reader->Finish(&call->status, call);
        }
        return;
      case Call::Step::kFinish: {
        call->record.e2e_s = Seconds(Clock::now() - call->sent);
        call->record.status_code = static_cast<int>(call->status.error_code());
        if (!call->status.ok()) call->record.error = call->status.error_message();
        call->record.itl_s.shrink_to_fit();  // growth slack would outlive the call
        done.push_back(std::move(call->record));
        in_flight.erase(call);
        delete call;
        return;
      }
    }
  };

  while (true) {
    const Clock::time_point now = Clock::now();
    if (!stopped && now >= limit) {
      stopped = true;
      result.not_sent = n - next;
      for (Call* c : in_flight) c->ctx.TryCancel();
    }
    if (!stopped) {
      if (open_loop) {
        while (next < n && at(spec.arrivals[next]) <= now) send(next++);
      } else {
        const int k = ClosedLoopToStart(concurrency, static_cast<int>(in_flight.size()), n - next);
        for (int i = 0; i < k; ++i) send(next++);
      }
    }
    if (in_flight.empty() && (stopped || next >= n)) break;

    Clock::time_point wake = now + std::chrono::milliseconds(100);
    if (!stopped && open_loop && next < n) wake = std::min(wake, at(spec.arrivals[next]));
    if (!stopped) wake = std::min(wake, limit);
    void* tag = nullptr;
    bool ok = false;
    const auto deadline = std::chrono::system_clock::now() + (wake - Clock::now());
    switch (cq.AsyncNext(&tag, &ok, deadline)) {
      case grpc::CompletionQueue::GOT_EVENT:
        handle(static_cast<Call*>(tag), ok);
        // Drain what else is ready (bounded, so due sends are not starved).
        for (int i = 0;
             i < 256 && cq.AsyncNext(&tag, &ok, std::chrono::system_clock::time_point()) ==
                            grpc::CompletionQueue::GOT_EVENT;
             ++i) {
          handle(static_cast<Call*>(tag), ok);
        }
        break;
      case grpc::CompletionQueue::TIMEOUT:
        break;
      case grpc::CompletionQueue::SHUTDOWN:
        break;
    }
  }
  cq.Shutdown();
  void* tag = nullptr;
  bool ok = false;
  while (cq.Next(&tag, &ok)) {
  }

  std::sort(done.begin(), done.end(),
            [](const RequestRecord& a, const RequestRecord& b) { return a.start_s < b.start_s; });
  double first = 0, last = 0;
  for (size_t i = 0; i < done.size(); ++i) {
    const double end = done[i].start_s + std::max(0.0, done[i].e2e_s);
    if (i == 0) first = done[i].start_s;
    last = std::max(last, end);
  }
  result.duration_s = done.empty() ? 0 : last - first;
  result.records = std::move(done);
  return result;
}

}  // namespace compressd::loadtest
