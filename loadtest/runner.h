// Runner: drives many concurrent Generate streams over one channel from a single thread (the
// caller's), with one grpc::CompletionQueue. Each in-flight request is a Call object with an
// explicit step (start, read, finish) and is its own completion-queue tag, so there is never
// more than one operation outstanding per call. Timestamps are taken when the completion
// queue delivers each message.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "loadtest/stats.h"
#include "loadtest/workload.h"

namespace compressd::loadtest {

struct RunSpec {
  // Open loop when `arrivals` is non-empty (send times in seconds, one per item); otherwise
  // closed loop with `concurrency` requests in flight.
  std::vector<double> arrivals;
  int concurrency = 1;
  double duration_limit_s = 0;  // 0 = none
  double request_timeout_s = 600;
  bool ignore_eos = true;
  float temperature = 0;
  std::string kv_cache;  // GenerateRequest.kv_cache of every request ("" = not set)
  uint64_t seed = 0;
};

struct RunResult {
  std::vector<RequestRecord> records;  // one per request sent, in send order
  double duration_s = 0;               // first send to last completion
  int not_sent = 0;                    // dropped by --duration-limit
};

// Connects to `target` (insecure) and waits up to `timeout_s` for the channel to be ready.
// `lb_policy` names a gRPC load-balancing policy ("" = the default).
absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect(const std::string& target, double timeout_s,
                                                       const std::string& lb_policy = "");

// Sends `items` according to `spec` and returns when every sent request has finished.
RunResult RunLoad(const std::shared_ptr<grpc::Channel>& channel, const std::vector<WorkItem>& items,
                  const RunSpec& spec);

}  // namespace compressd::loadtest
